import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("MOSR_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load_script(name: str):
    """Import ``scripts/<name>.py`` as a module (the scripts folder is no package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny():
    from mosr.testing import tiny_model

    return tiny_model()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep converted-model caches of tests out of the user's cache, except for the real model."""
    if "MOSR_TEST_CACHE" in os.environ:
        monkeypatch.setenv("MOSR_CACHE", os.environ["MOSR_TEST_CACHE"])


@pytest.fixture()
def one_thread():
    """Tiny models are faster on one thread, and the machine is shared."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture()
def fake_generate(monkeypatch):
    """``mosr.generation.generate`` answers "answer to PROMPT"; returns the prompts of each call."""
    import mosr.generation

    calls: list[list[str]] = []

    def fake(loaded, prompts, **kw):
        calls.append(list(prompts))
        return [f"answer to {p}" for p in prompts]

    monkeypatch.setattr(mosr.generation, "generate", fake)
    return calls
