"""Stand-in for Slicer's ``slicer.packaging`` (Slicer >= 5.12), written for the headless tests.

Not Slicer's code: the two functions SynPo/SynPo.py calls, with the behaviour SynPo relies
on and without Slicer's dialogs:

- ``pip_ensure``: installs only the requirements that are not met (nothing when all are);
  in testing mode it installs nothing, as Slicer's does by default; with
  ``prompt_install`` it asks first (``slicer.util.confirmOkCancelDisplay``);
- ``pip_install``: ``python -m pip install <args>`` in this interpreter, raising on failure.

Names and signatures are a subset of Slicer's (checked against
Testing/module/slicer_api/slicer-api.json by Testing/module/test_slicer_module_headless.py).
"""

import importlib.metadata
import shlex
import subprocess
import sys

from packaging.requirements import Requirement  # PyPI's packaging (absolute import: not this file)

import slicer


def _met(requirement):
    if requirement.marker is not None and not requirement.marker.evaluate():
        return True
    try:
        version = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return requirement.specifier.contains(version, prereleases=True)


def pip_ensure(requirements, *, prompt_install=True, requester=None):
    requirements = [Requirement(r) for r in ([requirements] if isinstance(requirements, str) else requirements)]
    missing = [str(r) for r in requirements if not _met(r)]
    if not missing or slicer.app.testingEnabled():
        return None
    if prompt_install and not slicer.util.confirmOkCancelDisplay(
            "Install these Python packages?\n" + "\n".join(missing), f"{requester or 'Slicer'}: install packages"):
        raise RuntimeError("User declined package installation")
    return pip_install(missing, requester=requester)


def pip_install(requirements, *, requester=None):
    args = shlex.split(requirements) if isinstance(requirements, str) else list(requirements)
    subprocess.run([sys.executable, "-m", "pip", "install", *args], check=True)
