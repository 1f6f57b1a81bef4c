"""real_path_under: the one symlink-aware confinement check behind TFTP, HTTP files and media trees."""

import os

from provisioner.paths import real_path_under


def test_inside_outside_and_symlinks(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f").write_bytes(b"x")
    (tmp_path / "secret").write_bytes(b"s")
    os.symlink(tmp_path / "secret", root / "leak")
    os.symlink("sub/f", root / "inside")
    assert real_path_under(root, "sub/f") == os.path.realpath(root / "sub" / "f")
    assert real_path_under(root, "./sub//f") == os.path.realpath(root / "sub" / "f")
    assert real_path_under(root, "inside") == os.path.realpath(root / "sub" / "f")
    assert real_path_under(root, "leak") is None
    assert real_path_under(root, "") == os.path.realpath(root)
    sibling = tmp_path / "root-evil"
    sibling.mkdir()
    os.symlink(sibling, root / "sib")
    assert real_path_under(root, "sib") is None  # the prefix trap of tftpy#110: /root-evil is not under /root
