"""A training script whose op build never ends: it takes torch's build lock of a JIT extension, as
torch.utils.cpp_extension does for DeepSpeed's fused_adam, says so, and hangs until it is stopped."""

import os
import sys
import time

from torch.utils.file_baton import FileBaton

build_dir = os.path.join(os.environ["TORCH_EXTENSIONS_DIR"], "fused_adam")
os.makedirs(build_dir, exist_ok=True)
if not FileBaton(os.path.join(build_dir, "lock")).try_acquire():
    sys.exit("the build lock is taken")
print("building fused_adam", flush=True)
time.sleep(300)
