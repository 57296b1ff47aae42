# triage: the two commands you need are `make demo` and `make test`.
.PHONY: setup build demo test lint fmt hooks clean-cache quantize bench

setup:        ## fetch ONNX Runtime + all-MiniLM-L6-v2 (fp32, and its int8 graph) into ~/.cache/triage (cached, checksummed)
	bash scripts/setup.sh

build:        ## release build of the triage binary
	cargo build --release

demo:         ## the whole loop: broker, Prometheus, Alertmanager, drift, late labels, retrain, promote
	bash scripts/demo.sh

test:         ## set up, then fmt check, clippy, and every test
	bash scripts/test.sh

quantize:     ## the int8 graphs, fused (the default) and as exported (setup runs it; throw-away venv; docs/performance.md)
	bash scripts/quantize.sh

bench:        ## criterion benches of the pure parts (classify cost per window)
	cargo bench --bench model

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

fmt:
	cargo fmt --all

hooks:        ## install the pre-commit hook (fmt + clippy)
	ln -sf ../../scripts/pre-commit .git/hooks/pre-commit
	@echo "pre-commit hook installed"

clean-cache:  ## forget cached training features (not the model or runtime)
	rm -rf "$${TRIAGE_CACHE_DIR:-$$HOME/.cache/triage}/features"
