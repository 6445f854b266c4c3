# Thin aliases for the scripts; the scripts are the source of truth.
.PHONY: run test bench schema
run:
	scripts/run
test:
	scripts/test
bench:
	scripts/bench
schema:
	scripts/update-schema
