"""``python train.py model=cnn3 optimizer=adam``: see ``fer_lightning.train``."""

from fer_lightning.train import main

if __name__ == "__main__":
    main()
