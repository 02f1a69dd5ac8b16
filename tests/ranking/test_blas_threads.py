"""The worker keeps numpy's BLAS to one thread (`ranking.vectors.one_blas_thread`)."""

from __future__ import annotations

import subprocess
import sys


def test_one_blas_thread_limits_numpy() -> None:
    """Checked in a fresh interpreter: the limit lasts for the process."""
    from threadpoolctl import threadpool_info

    one_blas_thread_in_child = subprocess.run(
        [sys.executable, "-c", "import numpy; from ranking.vectors import one_blas_thread; one_blas_thread(); "
         "from threadpoolctl import threadpool_info; "
         "print(max(i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'))"],
        capture_output=True, text=True, check=True)
    assert one_blas_thread_in_child.stdout.strip() == "1"
    assert any(i["user_api"] == "blas" for i in threadpool_info())   # numpy's BLAS is found at all
