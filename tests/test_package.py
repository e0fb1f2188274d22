import importlib


def test_subpackages_install_under_lares_rl():
    for name in ["lares_rl", "lares_rl.data", "lares_rl.envs", "lares_rl.policies", "lares_rl.configs"]:
        assert importlib.import_module(name) is not None
