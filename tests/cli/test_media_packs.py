"""media add-pack / packs / remove-pack, and the answer-file preview naming the packs."""

import json

from helpers import make_media_tree
from pack_trees import make_pack_tree


def test_add_list_preview_and_remove_packs(run, tmp_path):
    assert run("media", "add", "xs84", str(make_media_tree(tmp_path / "xs84"))).exit_code == 0
    run("hosts", "add", "aabbccddee01", "--name", "h1", "--pool", "p", "--disk", "/dev/disk/by-id/scsi-1")
    run("hosts", "add", "aabbccddee02", "--name", "h2", "--pool", "p", "--disk", "/dev/disk/by-id/scsi-2")
    r = run("media", "add-pack", "xs84", str(make_pack_tree(tmp_path / "raid", "megaraid", drivers=["mr-module"])),
            "--driver", "--host", "aa:bb:cc:dd:ee:01")
    assert r.exit_code == 0, r.output
    assert "driver disk" in r.output and "aa:bb:cc:dd:ee:01" in r.output and "mr-module" in r.output
    r = run("media", "add-pack", "xs84", str(make_pack_tree(tmp_path / "tools")), "--name", "acme", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["kind"] == "pack"
    listing = json.loads(run("media", "packs", "xs84", "--json").output)
    assert [(p["name"], p["kind"], p["hosts"]) for p in listing] == [("raid", "driver", ["aa:bb:cc:dd:ee:01"]),
                                                                     ("acme", "pack", [])]
    text = run("media", "packs", "xs84").output
    assert "all hosts" in text and "xenserver-release >= 8.4.0" in text

    preview = run("answerfile", "aabbccddee01", "--media", "xs84").output
    assert '<driver-source type="url">http://' in preview and "/media/xs84/packs/raid/</driver-source>" in preview
    assert "/media/xs84/packs/acme/</source>" in preview
    other = run("answerfile", "aabbccddee02", "--media", "xs84").output
    assert "driver-source" not in other and "/media/xs84/packs/acme/</source>" in other

    r = run("media", "add-pack", "xs84", str(make_pack_tree(tmp_path / "x")), "--driver")
    assert r.exit_code == 1 and "no comps group 'drivers'" in r.output
    r = run("media", "add-pack", "xs84", str(tmp_path / "xs84"))
    assert r.exit_code == 1 and "has no update.xml" in r.output
    r = run("media", "add-pack", "xs84", str(make_pack_tree(tmp_path / "y")), "--host", "aabbccddee09")
    assert r.exit_code == 1 and "no such host" in r.output
    r = run("media", "packs", "nope")
    assert r.exit_code == 1 and "no media named 'nope'" in r.output

    assert run("media", "remove-pack", "xs84", "raid").exit_code == 0
    assert [p["name"] for p in json.loads(run("media", "packs", "xs84", "--json").output)] == ["acme"]
    r = run("media", "remove-pack", "xs84", "raid")
    assert r.exit_code == 1 and "has no pack named 'raid'" in r.output
