# Set-up and test entry points (the README's two commands are `make demo` and `make test`).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Debian packages: boot loaders copied into tftp_root (pxelinux, syslinux-common, grub-efi-amd64-bin), real TFTP
# clients and servers used by tests and benches (tftp-hpa, tftpd-hpa, curl), nginx for the HTTP bench, chromium for
# the dashboard's browser tests (driven by Playwright's Python package through executable_path).
# gpgv: verifies update bundles' repomd.xml.asc (provisioner/updates/signature.py); gnupg: the tests' signing key
DEBIAN_PACKAGES := pxelinux syslinux-common grub-efi-amd64-bin tftp-hpa tftpd-hpa curl nginx-light chromium gpgv gnupg

.PHONY: demo test deps-debian venv bench clean

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
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

demo: venv
	$(BIN)/provisioner demo

test: venv deps-debian
	$(BIN)/python -m pytest -q -m "not e2e"  # the QEMU boots run in `make e2e`

bench: venv deps-debian
	$(BIN)/python bench/tftp_bench.py
	$(BIN)/python bench/http_bench.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis

include e2e.mk
