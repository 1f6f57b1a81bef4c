# End-to-end boots with real firmware in QEMU (tests/e2e, issue 8). Included from the Makefile.
# `make e2e` installs the lab's Debian packages (docs/lab.md "Debian packages"), unpacks ONE Debian kernel and Xen 4.17
# under $(E2E_CACHE) (apt-get download + dpkg -x, nothing installed), then runs the e2e suite as root.
E2E_CACHE ?= .e2e-cache
E2E_DEBIAN_PACKAGES := qemu-system-x86 ipxe-qemu pxelinux syslinux-common dnsmasq-base busybox-static cpio \
  grub-efi-amd64-bin ovmf iproute2 \
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients python3-libvirt python3-venv mtools ipmitool
# The BMC emulators of tests/e2e/test_bmc_e2e.py (sushy-tools' libvirt driver, virtualbmc) in their own venv over
# Debian's python3-libvirt (docs/lab.md "BMC boots over libvirt").
E2E_BMC_VENV ?= .e2e-venv
# The kernel the linux-image-amd64 metapackage currently points at: one package, never a glob (a glob fetches
# every kernel in the archive, over 1 GB).
E2E_KERNEL_PKG ?= $(shell apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $$2; exit}')
E2E_XEN_PKG ?= xen-hypervisor-4.17-amd64
E2E_PYTHON ?= $(BIN)/python

.PHONY: e2e e2e-deps e2e-cache e2e-bmc-venv

e2e-deps:
	@missing=$$(for p in $(E2E_DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Unpacked trees: $(E2E_CACHE)/kernel (boot/vmlinuz-*, lib/modules/*) and $(E2E_CACHE)/xen (boot/xen-*.gz).
e2e-cache:
	@set -e; mkdir -p $(E2E_CACHE)/debs; \
	if ! ls $(E2E_CACHE)/kernel/boot/vmlinuz-* >/dev/null 2>&1; then \
	  test -n "$(E2E_KERNEL_PKG)" || { echo "cannot resolve linux-image-amd64 (run apt-get update)"; exit 1; }; \
	  (cd $(E2E_CACHE)/debs && apt-get download -q $(E2E_KERNEL_PKG)); \
	  rm -rf $(E2E_CACHE)/kernel; dpkg -x $(E2E_CACHE)/debs/$(E2E_KERNEL_PKG)_*.deb $(E2E_CACHE)/kernel; \
	fi; \
	if ! ls $(E2E_CACHE)/xen/boot/xen-*.gz >/dev/null 2>&1; then \
	  (cd $(E2E_CACHE)/debs && apt-get download -q $(E2E_XEN_PKG)); \
	  rm -rf $(E2E_CACHE)/xen; dpkg -x $(E2E_CACHE)/debs/$(E2E_XEN_PKG)_*.deb $(E2E_CACHE)/xen; \
	fi

e2e-bmc-venv: e2e-deps
	@test -x $(E2E_BMC_VENV)/bin/vbmcd -a -x $(E2E_BMC_VENV)/bin/sushy-emulator || { \
	  /usr/bin/python3 -m venv --system-site-packages $(E2E_BMC_VENV) && \
	  $(E2E_BMC_VENV)/bin/pip install -q -r tests/e2e/requirements-bmc.txt; }

e2e: venv e2e-deps e2e-cache e2e-bmc-venv
	PROVISIONER_E2E_REQUIRED=1 PROVISIONER_E2E_CACHE=$(abspath $(E2E_CACHE)) \
	  PROVISIONER_E2E_BMC_VENV=$(abspath $(E2E_BMC_VENV)) $(E2E_PYTHON) -m pytest -q -s -p no:cacheprovider tests/e2e
