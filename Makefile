.PHONY: run test
run:  ## install, migrate, import the demo sample and serve on http://127.0.0.1:8000
	bash scripts/run.sh
test: ## install and run the tests against PostgreSQL and SQLite
	bash scripts/test.sh
