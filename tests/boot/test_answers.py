"""boot.answers without Flask: the installer's requests (answer file, scripts, report) decided in one place."""

import pytest
from helpers import make_media_tree

from provisioner import media, states
from provisioner.boot import answers, attempts
from provisioner.model import Host

MAC = "aa:bb:cc:dd:ee:01"
HOST_IP = "10.0.0.7"


@pytest.fixture
def armed(store, config, tmp_path):
    media.import_media(store, config, "xs84", make_media_tree(tmp_path / "tree"))
    store.add_host(Host.from_fields({"mac": MAC, "name": "h1", "pool": "p1", "disk": "/dev/disk/by-id/scsi-1",
                                     "ip": HOST_IP}))
    return attempts.arm(store, config, MAC, "xs84")


class Queue:
    """Stands in for the event writer's queue: counts the drains a request asked for."""

    def __init__(self):
        self.drains = 0

    def drain(self, timeout=10.0):
        self.drains += 1
        return True


def test_one_installer_run_through_the_answers(store, config, armed):
    reply = answers.answer_file(store, config, armed.token, HOST_IP, None)
    assert reply.status == 200 and reply.mimetype == "application/xml"
    assert b'<installation mode="upgrade">' in reply.body
    assert answers.answer_file(store, config, armed.token, HOST_IP, None).status == 404  # served once
    start = answers.installer_script(store, config, armed.token, answers.STAGE_START, HOST_IP, None)
    assert start.status == 200 and "window is now closed" in start.body
    assert attempts.attempt_by_token(store, armed.token).state == states.STARTED
    done = answers.installer_script(store, config, armed.token, answers.STAGE_COMPLETE, HOST_IP, None)
    assert done.status == 200 and f"/boot/report/{armed.token}/" in done.body
    assert answers.report(store, config, armed.token, "0", HOST_IP, None).status == 200
    assert attempts.attempt_by_token(store, armed.token).state == states.SUCCEEDED


def test_scripts_are_always_a_script(store, config, armed):
    for stage in (answers.STAGE_START, answers.STAGE_COMPLETE, "bogus"):
        reply = answers.installer_script(store, config, "no-such-token-0123456789", stage, HOST_IP, None)
        assert reply.status == 200 and reply.body.startswith("#!/bin/sh\n") and "exit 0" in reply.body


def test_an_unbound_attempt_lets_the_queue_land_first(store, config, armed):
    queue = Queue()
    answers.answer_file(store, config.replace(attempt_client_binding=True), armed.token, "10.0.0.99", queue)
    assert queue.drains == 1  # not yet bound and not the registered host: wait for queued boot-config records
    answers.answer_file(store, config.replace(attempt_client_binding=False), armed.token, "10.0.0.99", queue)
    assert queue.drains == 1
