import pytest

from simtune.errors import InputError, LaunchError
from simtune.runner.resources import Resources, parse_hostfile


def _cuda(hosts, num_gpus, num_nodes=1):
    return Resources(hosts=hosts, num_gpus=num_gpus, num_nodes=num_nodes, accelerator="cuda",
                     hostfile="/h")


def test_sixteen_gpus_eight_per_experiment_run_two_at_once():
    slots = _cuda((("node", 16),), 8).concurrent_slots()
    assert [s.include_arg() for s in slots] == ["node:0,1,2,3,4,5,6,7", "node:8,9,10,11,12,13,14,15"]


def test_multi_node_slot_sets():
    two_hosts = (("a", 8), ("b", 8))
    def includes(num_gpus, num_nodes):
        return [s.include_arg() for s in _cuda(two_hosts, num_gpus, num_nodes).concurrent_slots()]

    assert includes(8, 2) == ["a:0,1,2,3,4,5,6,7@b:0,1,2,3,4,5,6,7"]
    assert len(includes(4, 1)) == 4
    assert includes(4, 2) == ["a:0,1,2,3@b:0,1,2,3", "a:4,5,6,7@b:4,5,6,7"]
    assert _cuda((("a", 8), ("b", 4)), 3, 2).processes_at_once_per_host() == 3
    assert _cuda(two_hosts, 3, 1).processes_at_once_per_host() == 6


@pytest.mark.parametrize("num_gpus,num_nodes", [(0, 1), (9, 1), (4, 3), (1, 0)])
def test_impossible_requests(num_gpus, num_nodes):
    with pytest.raises(InputError):
        _cuda((("a", 8), ("b", 8)), num_gpus, num_nodes)


def test_local_cpu_processes():
    resources = Resources.local(num_gpus=2, accelerator="cpu")
    assert resources.hosts == (("localhost", 2),) and resources.world_size == 2
    assert len(resources.concurrent_slots()) == 1
    assert resources.is_first_local_slots(resources.concurrent_slots()[0])
    with pytest.raises(InputError):
        Resources.local(num_gpus=0, accelerator="cpu")
    with pytest.raises(InputError):
        Resources.local(num_gpus=1, num_nodes=2, accelerator="cpu")


def test_hostfile_parsing(tmp_path):
    path = tmp_path / "hostfile"
    path.write_text("# cluster\n\nworker-0 slots=8\nworker-1   slots=4  # half\n")
    assert parse_hostfile(path) == (("worker-0", 8), ("worker-1", 4))
    resources = Resources.from_hostfile(path, accelerator="cuda")
    assert (resources.num_gpus, resources.num_nodes, resources.hostfile) == (4, 2, str(path))


@pytest.mark.parametrize("text,fragment", [
    ("worker-0 8\n", "line 1"),
    ("a slots=2\n# c\na slots=4\n", "twice"),
    ("# nothing\n", "no host"),
    ("a slots=0\n", "no slots"),
])
def test_bad_hostfiles(tmp_path, text, fragment):
    path = tmp_path / "hostfile"
    path.write_text(text)
    with pytest.raises(LaunchError, match=fragment):
        parse_hostfile(path)


def test_missing_hostfile(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        parse_hostfile(tmp_path / "none")


@pytest.mark.parametrize("cuda, hip, cpu_only", [("None", "None", True), ("'12.4'", "None", False),
                                                 ("None", "'6.2.4'", False)])
def test_a_cpu_only_torch_build_is_recognised_from_its_version_file(tmp_path, monkeypatch, cuda, hip, cpu_only):
    import importlib.machinery
    import importlib.util

    from simtune.runner import resources

    package = tmp_path / "torch"
    package.mkdir()
    (package / "version.py").write_text(f"__version__ = '2.13.0'\ncuda: Optional[str] = {cuda}\nhip = {hip}\n")
    spec = importlib.machinery.ModuleSpec("torch", None, is_package=True)
    spec.submodule_search_locations = [str(package)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec if name == "torch" else None)
    assert resources._torch_build_is_cpu_only() is cpu_only


def test_the_accelerator_named_in_the_environment_wins(monkeypatch):
    from simtune.runner.resources import detect_accelerator

    monkeypatch.setenv("DS_ACCELERATOR", "cuda")
    assert detect_accelerator() == "cuda"
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    assert detect_accelerator() == "cpu"
