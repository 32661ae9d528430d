"""`python -m deepvision` runs the same CLI as the `deepvision` console script."""

from deepvision.cli import main

if __name__ == "__main__":
    main()
