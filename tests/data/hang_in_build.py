"""A training script whose op build never ends: it takes torch's build lock of a JIT extension, as
torch.utils.cpp_extension does for DeepSpeed's fused_adam, says so, and hangs until it is stopped.

The lock is taken as torch's ``FileBaton.try_acquire`` takes it (a file created with O_EXCL, its
descriptor kept open), without importing torch: the rank reaches the build seconds sooner on a
busy machine, well inside the test's time-out."""

import os
import sys
import time

build_dir = os.path.join(os.environ["TORCH_EXTENSIONS_DIR"], "fused_adam")
os.makedirs(build_dir, exist_ok=True)
try:
    lock = os.open(os.path.join(build_dir, "lock"), os.O_CREAT | os.O_EXCL)
except FileExistsError:
    sys.exit("the build lock is taken")
print("building fused_adam", flush=True)
time.sleep(300)
