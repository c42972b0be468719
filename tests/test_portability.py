"""Windows-safe imports: scanner_nb imports and computes where ``fcntl`` does not exist."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import scanner_nb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(scanner_nb.__file__)))

# Run in a fresh interpreter: ``sys.modules["fcntl"] = None`` makes ``import fcntl`` raise
# ImportError there, as on Windows, before scanner_nb is first imported. The op's kernel has a
# fetch_resources, so the once-per-machine lock is taken too; sc.run stores and load() reads.
PROGRAM = textwrap.dedent("""
    import sys
    sys.modules["fcntl"] = None  # as on Windows: `import fcntl` raises ImportError
    from typing import Any
    import scanner_nb as sp

    class Fetching(sp.Kernel):  # fetch_resources runs behind the once-per-machine lock
        def fetch_resources(self):
            self.fetched = True

        def execute(self, x: Any) -> Any:
            return 2 * x + self.fetched

    with sp.Client(db_path=sys.argv[1], show_progress=False) as sc:
        doubled = sc.ops.Fetching(x=sc.io.Input([sp.MemoryStream([1, 2, 3])]))
        print(doubled.compute())
        (stored,) = sc.run(sc.io.Output(doubled, [sp.NamedStream(sc, "d")]), show_progress=False)
        print(list(stored.load()))
    assert "fcntl" not in [m for m, v in sys.modules.items() if v is not None]
""")


def test_imports_and_computes_without_fcntl(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    result = subprocess.run([sys.executable, "-c", PROGRAM, str(tmp_path / "db")], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[[3, 5, 7]]", "[3, 5, 7]"]
