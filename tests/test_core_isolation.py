"""House rule 5: the core never imports Ray, MLflow or Optuna."""

import subprocess
import sys

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('ray', 'mlflow', 'optuna'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import pkgutil, importlib, atf
for m in pkgutil.walk_packages(atf.__path__, 'atf.'):
    importlib.import_module(m.name)
print('ok')
"""


def test_atf_imports_without_ray_mlflow_optuna():
    out = subprocess.run([sys.executable, "-c", BLOCK], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
