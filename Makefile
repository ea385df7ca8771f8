# make install && make test set everything up on a fresh machine (Python >= 3.10).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Pinned torch + torchvision. Keep your own torch build (e.g. for your GPU): make install TORCH_CONSTRAINTS=
TORCH_CONSTRAINTS ?= -c constraints-torch.txt

.PHONY: install test test-fast lint train bench models model clean

install:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]" -c constraints.txt $(TORCH_CONSTRAINTS)

test:
	$(BIN)/python -m pytest -q

test-fast:  # while developing: everything but the tests marked slow (make test runs them all)
	$(BIN)/python -m pytest -q -m "not slow"

lint:
	$(BIN)/ruff check fer_lightning hydra_plugins tests train.py
	$(BIN)/ruff format --check fer_lightning hydra_plugins tests train.py

train:
	$(BIN)/python train.py $(ARGS)

bench:
	$(BIN)/python -m fer_lightning.bench $(ARGS)

# The shipped models (fer_lightning/deploy/pretrained): train on your FER-2013 copy (FER2013_DIR; the FER+
# votes beside it or in FERPLUS_DIR), export with rounded weights (under 3 MB; fer2013 also averages each face with
# its mirror image inside the file), record their outputs. About 3 hours on 2 cores.
STAMP := $(shell date +%Y-%m-%d_%H-%M-%S)
MODELS_RUN ?= logs/models/$(STAMP)
FER2013_EXPERIMENT ?= release_fer2013
FERPLUS_EXPERIMENT ?= ferplus_cpu
WEIGHTS ?= float16
TTA ?= none
PRETRAINED := fer_lightning/deploy/pretrained
models:
	$(MAKE) model NAME=fer2013 EXPERIMENT=$(FER2013_EXPERIMENT) MODELS_RUN=$(MODELS_RUN) WEIGHTS=int8 TTA=flip
	$(MAKE) model NAME=ferplus EXPERIMENT=$(FERPLUS_EXPERIMENT) MODELS_RUN=$(MODELS_RUN)

model:
	$(BIN)/python train.py experiment=$(EXPERIMENT) seed=0 hydra.run.dir=$(MODELS_RUN)/$(NAME)
	$(BIN)/fer-export --ckpt $(MODELS_RUN)/$(NAME)/checkpoints/last.ckpt --format onnx --weights $(WEIGHTS) --tta $(TTA) --force \
		--output $(PRETRAINED)/$(NAME).onnx
	$(BIN)/python -m fer_lightning.deploy.pretrained.record $(NAME) --ckpt $(MODELS_RUN)/$(NAME)/checkpoints/last.ckpt

clean:
	rm -rf .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
