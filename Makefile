# Thin aliases for the scripts; the scripts are the source of truth.
.PHONY: run test bench bench-workspaces schema
run:
	scripts/run
test:
	scripts/test
bench:
	scripts/bench
bench-workspaces:
	scripts/bench-workspaces
schema:
	scripts/update-schema
