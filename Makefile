# Set-up and test entry points (the README's two commands are `make demo` and `make test`).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Debian packages: boot loaders copied into tftp_root (pxelinux, syslinux-common, grub-efi-amd64-bin), real TFTP
# clients and servers used by tests and benches (tftp-hpa, tftpd-hpa, curl), nginx for the HTTP bench, chromium for
# the dashboard's browser tests (driven by Playwright's Python package through executable_path).
# gpgv: verifies update bundles' repomd.xml.asc (provisioner/updates/signature.py); gnupg: the tests' signing key
# systemd: `systemd-analyze verify` of deploy/provisioner.service (make install-service, tests/test_deploy.py)
# libpq5: the C client library psycopg (store/postgres.py) loads; postgresql: initdb/pg_ctl for the real server the
# store tests and bench/config_latency_pg.py start in a temporary directory
# kea-dhcp4-server, isc-dhcp-server, dnsmasq-base: the DHCP servers whose own checkers (kea-dhcp4 -t, dhcpd -t,
# dnsmasq --test) check `provisioner dhcp-config` (tests/dhcp); dnsmasq also runs `serve --proxy-dhcp`. Installed
# with a policy-rc.d that exits 101, so their packages do not start a DHCP service on this machine.
DEBIAN_PACKAGES := pxelinux syslinux-common grub-efi-amd64-bin tftp-hpa tftpd-hpa curl nginx-light chromium gpgv gnupg \
	libpq5 postgresql systemd kea-dhcp4-server isc-dhcp-server dnsmasq-base

.PHONY: demo test deps-debian venv bench clean service-unit install-service

venv: $(BIN)/provisioner

$(BIN)/provisioner: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

deps-debian:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  rcd=; if [ ! -e /usr/sbin/policy-rc.d ]; then rcd=1; printf '#!/bin/sh\nexit 101\n' | $$SUDO tee /usr/sbin/policy-rc.d >/dev/null; \
	    $$SUDO chmod 755 /usr/sbin/policy-rc.d; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	  status=$$?; if [ -n "$$rcd" ]; then $$SUDO rm -f /usr/sbin/policy-rc.d; fi; exit $$status; \
	fi

demo: venv
	$(BIN)/provisioner demo

# The suite waits more than it computes (simulated clocks, subprocesses, sockets): TEST_WORKERS pytest-xdist
# processes, each with its own session fixtures (PostgreSQL server, browser, simulators); TEST_WORKERS=0 runs it in
# this one process. worksteal: an idle worker takes queued tests from a busy one (a few tests take minutes).
TEST_WORKERS ?= 4
test: venv deps-debian
	$(BIN)/python -m pytest -q -m "not e2e" -n $(TEST_WORKERS) --dist worksteal  # the QEMU boots run in `make e2e`

bench: venv deps-debian
	$(BIN)/python bench/tftp_bench.py
	$(BIN)/python bench/http_bench.py

# The systemd unit (deploy/provisioner.service, docs/deploy.md) with ExecStart pointing at this venv's entry point.
UNIT_DIR ?= /etc/systemd/system
UNIT_OUT ?= $(UNIT_DIR)/provisioner.service
service-unit:
	sed 's#^ExecStart=/opt/provisioner/.venv/bin/provisioner #ExecStart=$(abspath $(BIN))/provisioner #' \
	  deploy/provisioner.service > $(UNIT_OUT).tmp && mv $(UNIT_OUT).tmp $(UNIT_OUT)

# As root: the `provisioner` system user, /etc/provisioner/provisioner.toml (kept if present), the unit; then
# `systemctl enable --now provisioner` and `provisioner doctor` (as that user) say whether a host can boot.
install-service: venv
	@test "$$(id -u)" = 0 || { echo "install-service: run as root (sudo make install-service)"; exit 1; }
	getent passwd provisioner >/dev/null || useradd --system --user-group --home-dir /var/lib/provisioner \
	  --no-create-home --shell /usr/sbin/nologin provisioner
	install -d -m 0755 /etc/provisioner
	test -e /etc/provisioner/provisioner.toml || install -m 0640 -g provisioner deploy/provisioner.toml \
	  /etc/provisioner/provisioner.toml
	$(MAKE) --no-print-directory service-unit UNIT_OUT=$(UNIT_OUT)
	systemd-analyze verify $(UNIT_OUT)
	if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "installed $(UNIT_OUT); set public_url in /etc/provisioner/provisioner.toml, then: systemctl enable --now provisioner"

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis

include e2e.mk
