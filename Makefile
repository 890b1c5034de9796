# The set-up commands of the README (fresh machine -> result):
#   make demo   installs SynPo (lite backend) and segments a real MRI from one slice
#   make test   installs SynPo with every backend and the test tools, and runs the tests
#   make scoreboard  re-computes docs/scoreboard.md on Colin27 + AAL (about 45 min on 2 busy
#               CPU cores; resumable: finished cases are kept in eval-output/scoreboard)
# All are idempotent: a second run reuses the virtual environment.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)
DATA   := /usr/share/mricron/templates/ch2.nii.gz
# torch through pip's own resolution; torchvision is needed by sam2. On a GPU machine,
# install the CUDA build you want first (pip keeps a satisfying torch).
TORCH  := "torch>=2.1" "torchvision>=0.16"

.PHONY: demo test scoreboard install install-test data clean

demo: install data
	$(BIN)/synpo demo --out demo-output

test: install-test data
	$(BIN)/python -m pytest Testing -ra

# --threads 1: one torch thread is several times faster than two on a shared, busy CPU
scoreboard: install data
	$(BIN)/synpo eval colin --threads 1 --out docs/scoreboard --summary docs/scoreboard.md \
		--notes docs/scoreboard-notes.md --work eval-output/scoreboard

data: $(DATA)
$(DATA):
	$(SUDO) apt-get install -y -q mricron-data || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q mricron-data)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

install: $(VENV)/.installed-lite
$(VENV)/.installed-lite: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[lite]"
	touch $@

# QT_LIBS: what PySide6's offscreen Qt needs from the system (the Slicer module's headless
# widget tests draw with it; no display and no Xvfb). Installed only when Qt cannot start.
# The shared libraries QtCore/QtGui/QtWidgets/QtUiTools and the offscreen plugin link to and
# do not bundle (readelf -d): libEGL, libGL, libX11, libxkbcommon, libfontconfig, libfreetype,
# libglib-2.0/libgthread-2.0 (QtCore's event loop), libdbus-1, plus libc/libstdc++/zlib/zstd
# that every Debian/Ubuntu has; libX11 and libfreetype come with libgl1 and libfontconfig1.
# A font, or text draws as nothing. (Debian 13 and Ubuntu 24.04 ship glib as libglib2.0-0t64,
# which provides the name libglib2.0-0 on 64-bit machines.)
QT_LIBS := libegl1 libgl1 libxkbcommon0 libfontconfig1 libglib2.0-0 libdbus-1-3 fonts-dejavu-core
QT_CHECK := QT_QPA_PLATFORM=offscreen $(BIN)/python -c "from PySide6 import QtWidgets; QtWidgets.QApplication([])"

install-test: $(VENV)/.installed-test
$(VENV)/.installed-test: $(VENV)/.installed-lite
	# the test extra brings PySide6-Essentials (a real Qt for the Slicer module's tests)
	$(BIN)/pip install -q -e ".[lite,paper,test]"
	# sam2 builds against the installed torch; its CUDA extension is optional
	SAM2_BUILD_CUDA=0 $(BIN)/pip install -q --no-build-isolation "sam2==1.1.0"
	$(QT_CHECK) 2>/dev/null || $(SUDO) apt-get install -y -q $(QT_LIBS) || \
		($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $(QT_LIBS))
	$(QT_CHECK)
	touch $@

clean:
	rm -rf $(VENV) demo-output
