"""Boot disks for the e2e labs whose serial console proves the firmware booted the disk: BIOS, a 512-byte MBR boot
sector that writes LOCAL_DISK to COM1 and powers the machine off (PIIX4 ACPI PM1a_CNT at 0x604, SLP_EN); UEFI, an
MBR disk whose EFI system partition holds a GRUB image at \\EFI\\BOOT\\BOOTX64.EFI that echoes LOCAL_DISK and halts.
Needs grub-mkimage (grub-common) and mtools."""

from __future__ import annotations

import subprocess
from pathlib import Path

LOCAL_DISK = "LOCAL DISK BOOT"


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


def _mbr_code() -> bytes:
    """Real-mode code at 0x7c00: write the message to COM1 (0x3f8, waiting on LSR bit 5), then ACPI S5."""
    msg = f"\r\n{LOCAL_DISK} (BIOS MBR)\r\n".encode() + b"\0"
    head = bytes([0xFA, 0x31, 0xC0, 0x8E, 0xD8, 0xFC])  # cli; xor ax,ax; mov ds,ax; cld
    # mov si, msg (patched below); loop: lodsb; test al,al; jz done; mov ah,al; mov dx,0x3fd;
    # w: in al,dx; test al,0x20; jz w; mov dx,0x3f8; mov al,ah; out dx,al; jmp loop
    body = bytes([0xAC, 0x84, 0xC0, 0x74, 0x00, 0x88, 0xC4, 0xBA, 0xFD, 0x03,
                  0xEC, 0xA8, 0x20, 0x74, 0xFB, 0xBA, 0xF8, 0x03, 0x88, 0xE0, 0xEE, 0xEB, 0x00])
    # done: mov dx,0x604; mov ax,0x2000; out dx,ax; h: hlt; jmp h
    tail = bytes([0xBA, 0x04, 0x06, 0xB8, 0x00, 0x20, 0xEF, 0xF4, 0xEB, 0xFD])
    body = bytearray(body)
    body[4] = len(body) - 5  # jz done: from after the jz to the end of body
    body[22] = (-len(body)) & 0xFF  # jmp loop: back to body[0]
    msg_at = 0x7C00 + len(head) + 3 + len(body) + len(tail)
    code = head + bytes([0xBE, msg_at & 0xFF, msg_at >> 8]) + bytes(body) + tail + msg
    assert len(code) <= 446
    return code


def bios_disk(path: Path) -> Path:
    sector = _mbr_code().ljust(510, b"\0") + b"\x55\xAA"
    path.write_bytes(sector + bytes(1024 * 1024 - 512))
    return path


def uefi_disk(path: Path, workdir: Path) -> Path:
    """An MBR disk with one EFI system partition (type 0xEF, LBA 2048, FAT by mtools) holding GRUB as the
    removable-media path \\EFI\\BOOT\\BOOTX64.EFI, whose grub.cfg lies next to it on the ESP (not built in): GRUB
    reads it from the device it was started from, so LOCAL_DISK shows only when that device is this disk (a loader
    chained with the network as its device finds no grub.cfg: docs/firmware.md "Local boot on UEFI")."""
    cfg = workdir / "disk-grub.cfg"
    cfg.write_text(f'echo "{LOCAL_DISK} (UEFI ESP)"\nsleep 1\nhalt\n')
    efi = workdir / "BOOTX64.EFI"
    _run("grub-mkimage", "-O", "x86_64-efi", "-p", "/EFI/BOOT", "-o", str(efi),
         "echo", "sleep", "halt", "normal", "fat", "part_msdos")
    size_mb, start = 16, 2048
    sectors = size_mb * 2048 - start
    mbr = bytearray(512)
    entry = bytes([0x00, 0xFE, 0xFF, 0xFF, 0xEF, 0xFE, 0xFF, 0xFF]) + start.to_bytes(4, "little") + \
        sectors.to_bytes(4, "little")
    mbr[446:462] = entry
    mbr[510:512] = b"\x55\xAA"
    with open(path, "wb") as f:
        f.write(mbr)
        f.truncate(size_mb * 1024 * 1024)
    img = f"{path}@@{start * 512}"
    _run("mformat", "-i", img, "-T", str(sectors), "-h", "64", "-s", "32", "-v", "ESP", "::")
    _run("mmd", "-i", img, "::/EFI", "::/EFI/BOOT")
    _run("mcopy", "-i", img, str(efi), "::/EFI/BOOT/BOOTX64.EFI")
    _run("mcopy", "-i", img, str(cfg), "::/EFI/BOOT/grub.cfg")
    return path
