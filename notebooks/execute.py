"""Execute every notebook in this directory against committed results; fail on any error.

Used by .ci/harness.sh. The committed notebooks are not modified: executed copies (with their
outputs) go to the directory given as the first argument (default: ../target/notebooks).
"""
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

here = Path(__file__).resolve().parent
out = Path(sys.argv[1]) if len(sys.argv) > 1 else here.parent / "target" / "notebooks"
out.mkdir(parents=True, exist_ok=True)
notebooks = sorted(here.glob("*.ipynb"))
if not notebooks:
    sys.exit("no notebooks found")
for path in notebooks:
    t0 = time.time()
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(here)}}).execute()
    nbformat.write(nb, out / path.name)
    print(f"executed {path.name} in {time.time() - t0:.1f} s -> {out / path.name}")
