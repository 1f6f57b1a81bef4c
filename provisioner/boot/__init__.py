"""Everything a booting host is served, and the one decision behind it: "what does this MAC get right now?".

Every boot endpoint, TFTP or HTTP, parses its request, makes one call into this package and builds its response
from what comes back; none decides by itself (docs/architecture.md).

- policy: decide(), the one pure answer for a host and its newest attempt (installer or local boot).
- attempts: arm and disarm a host; the attempt tokens; the installer's signals that close and finish a window.
- service: what the TFTP server and the HTTP iPXE route call: a file name or MAC in, boot config bytes out.
- answers: what the installer's own HTTP requests get: the answer file, the two scripts, the result report.
- filenames: parse and format the per-host file names firmware asks for (pxelinux, GRUB, iPXE), and the
  TFTP names of media files together with their inverse.
- configs: render the per-MAC boot config a loader gets for a decision (pxelinux, GRUB, iPXE; 8.x and 9 media).
- answerfile / answerfile_fresh: the upgrade answer file and the lab reinstall's fresh-install file, two modules
  on purpose (only the second one wipes a disk), each re-parsed and checked before it is served
  (answerfile_fresh_check: the fresh-install file's checks).
- render: Jinja2 (the only module importing it) over templates/, strict and loud.
- urls: every URL a booting host is given, built in one place.
- loaders: fill tftp_root with the static boot loaders; the scan for stray per-MAC files that would shadow
  the decision.
"""
