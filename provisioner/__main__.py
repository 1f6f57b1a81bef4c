"""`python -m provisioner` runs the CLI."""

from provisioner.cli import main

if __name__ == "__main__":
    main(prog_name="provisioner")
