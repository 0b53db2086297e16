# Two commands matter to a newcomer: `make build` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
# Debian packages the tests drive for real: the browser, the Korean font (pages and reference
# figures), a MIME parser for the mail tests, the database server, the reverse proxy that
# deploy/nginx-digest.conf configures (run in front of two `digest serve` processes), the DNS
# server `digest doctor`'s tests serve SPF/DKIM/DMARC records from (dnsmasq-base: the binary
# without a system service, so nothing takes port 53 or touches /etc/resolv.conf), and the IMAP
# server that `digest bounces` reads in its tests (Dovecot, started by tests/imapkit.py).
SYSTEM_PACKAGES ?= chromium fonts-noto-cjk libemail-mime-perl postgresql nginx dnsmasq-base dovecot-imapd

.PHONY: build test check site refs lint bench bench-site bench-pong golden clean system-deps venv

build: $(STAMP)
	$(BIN)/digest check
	$(BIN)/digest build

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

check: $(STAMP)
	$(BIN)/digest check

# Only the virtual environment with the project and its test tools (what the other targets build first).
venv: $(STAMP)

# actionlint (with shellcheck on `run:` scripts) and zizmor (offline, strictest persona) over
# .github/workflows, ruff over the code, and `digest check`; all installed by the test extra.
lint: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/actionlint
	$(BIN)/zizmor --offline --no-progress --persona auditor .github/workflows
	$(BIN)/ruff check digest tests bench
	$(BIN)/digest check

bench: $(STAMP)
	$(BIN)/python bench/check.py

# The site at 1,000 and 10,000 notes against Material's blog plugin and plain pages (~20 min).
bench-site: $(STAMP)
	$(BIN)/python bench/site.py

# Pong steps per second against the original loop and the raw emulator (~3 min), then how far
# the speed options (several envs, float32) move each update from the original's (~4 min).
bench-pong: $(STAMP)
	$(BIN)/python bench/pong.py
	$(BIN)/python bench/pong_deviation.py

# Rewrite the committed expected outputs of golden tests after an intended change.
golden: $(STAMP)
	DIGEST_UPDATE_GOLDEN=1 $(BIN)/python -m pytest -q -k golden

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

clean:
	rm -rf site outbox .pytest_cache .hypothesis
