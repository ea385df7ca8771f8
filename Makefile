# make install && make test set everything up on a fresh machine (Python >= 3.10).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Pinned torch + torchvision. Keep your own torch build (e.g. for your GPU): make install TORCH_CONSTRAINTS=
TORCH_CONSTRAINTS ?= -c constraints-torch.txt

.PHONY: install test lint train bench clean

install:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]" -c constraints.txt $(TORCH_CONSTRAINTS)

test:
	$(BIN)/python -m pytest -q

lint:
	$(BIN)/ruff check fer_lightning hydra_plugins tests train.py
	$(BIN)/ruff format --check fer_lightning hydra_plugins tests train.py

train:
	$(BIN)/python train.py $(ARGS)

bench:
	$(BIN)/python -m fer_lightning.bench $(ARGS)

clean:
	rm -rf .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
