# Two entry points for a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := demo
DARKNET := .cache/darknet
ULTRALYTICS := .cache/ultralytics
OPENCV := .cache/opencv

.PHONY: demo test venv darknet-photos ultralytics-photos opencv-photos chromium clean

venv: $(STAMP)

# torch/torchvision: the versions pinned here are the ones pip finds on this machine's disk
# (PyPI's torchvision only works beside torch 2.14.1 here); elsewhere pip fetches them.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Debian's darknet package carries the classic sample photos (dog, horses, giraffe, ...).
# Only its data folder is unpacked (no install); the package lists are refreshed first when apt
# knows no darknet yet (a fresh machine), which needs root. Where apt is absent the photos are
# missing: the tests that need them then skip, and under CI=true a skip fails the run.
darknet-photos:
	@if [ ! -d /usr/share/darknet/data ] && [ ! -d $(DARKNET)/usr/share/darknet/data ] && command -v apt-get >/dev/null; then \
		mkdir -p $(DARKNET) && cd $(DARKNET) \
		&& { apt-get download darknet >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1; apt-get download darknet >/dev/null 2>&1; }; } \
		&& dpkg-deb -x darknet_*.deb . && rm -f darknet_*.deb \
		|| echo "darknet photos not available; using scikit-image and matplotlib photos only"; \
	fi

# ultralytics' wheel carries two street photos (bus.jpg, zidane.jpg) of the real-photo set
# (objsearch.datasets.real_photos); the wheel is only downloaded (no install) and read as a zip.
ultralytics-photos: $(STAMP)
	@if ! ls $(ULTRALYTICS)/ultralytics-*.whl >/dev/null 2>&1; then \
		$(BIN)/python -m pip download --quiet --no-deps "ultralytics==8.4.190" -d $(ULTRALYTICS) >/dev/null 2>&1 \
		|| echo "ultralytics' wheel could not be downloaded; the real-photo tests will skip"; \
	fi

# OpenCV's sample photos (Debian's opencv-doc, a 96 MB download; only examples/data is unpacked) for
# the held-out real-photo set, `objsearch bench real-photos --held-out`; `make test` does not need them.
opencv-photos:
	@if [ ! -d /usr/share/doc/opencv-doc/examples/data ] && [ ! -d $(OPENCV)/usr/share/doc/opencv-doc/examples/data ]; then \
		mkdir -p $(OPENCV) && cd $(OPENCV) \
		&& { apt-get download opencv-doc >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1; apt-get download opencv-doc >/dev/null 2>&1; }; } \
		&& dpkg-deb --fsys-tarfile opencv-doc_*.deb | tar -x --wildcards './usr/share/doc/opencv-doc/examples/data/*' \
		&& rm -f opencv-doc_*.deb; \
	fi
	@echo "OpenCV's sample data: export OBJSEARCH_OPENCV_DATA=$(CURDIR)/$(OPENCV)/usr/share/doc/opencv-doc/examples/data"

# The browser tests drive Debian's chromium (Playwright's own browser download needs the internet).
# Installed with apt-get when missing, which needs root (as CI runs); elsewhere the browser tests
# skip, and under CI=true a skip fails the run.
chromium:
	@if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null && command -v apt-get >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then \
			{ DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
			  || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; }; } \
			|| echo "chromium could not be installed; the browser tests will skip"; \
		else echo "chromium is missing and installing it needs root: sudo apt-get install chromium"; fi; \
	fi

demo: $(STAMP) darknet-photos
	OBJSEARCH_DARKNET_DATA=$(DARKNET)/usr/share/darknet/data $(BIN)/objsearch samples $(DEMO)/photos
	$(BIN)/objsearch index $(DEMO)/photos --index $(DEMO)/index
	$(BIN)/objsearch info --index $(DEMO)/index
	$(BIN)/objsearch query "dog" --index $(DEMO)/index -k 3
	$(BIN)/objsearch query "cat" --index $(DEMO)/index -k 3
	$(BIN)/objsearch query "a cup of coffee" --index $(DEMO)/index -k 3
	$(BIN)/objsearch query "horse" --index $(DEMO)/index -k 5 --per-image --html $(DEMO)/horse.html
	$(BIN)/objsearch query --image $(DEMO)/photos/skimage-chelsea.png --box 9,0,408,297 --index $(DEMO)/index -k 3 --html $(DEMO)/like-chelsea.html
	@echo ""
	@echo "Search the demo in your browser: $(BIN)/objsearch serve --index $(DEMO)/index   (then open http://127.0.0.1:8765/)"

test: $(STAMP) darknet-photos ultralytics-photos chromium
	OBJSEARCH_DARKNET_DATA=$(CURDIR)/$(DARKNET)/usr/share/darknet/data OBJSEARCH_ULTRALYTICS_WHEEL=$(CURDIR)/$(ULTRALYTICS) \
		$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO) .cache .objsearch
