# libaio, which DeepSpeed's async_io op links (ZeRO-Infinity's NVMe offload swaps through it), and
# the op built with the install (about a minute on 2 cores), not inside the test that swaps.
# (sourced by .ci/run, after apt.sh)
if apt_install libaio-dev; then
    DS_ACCELERATOR=cpu python -c "from deepspeed.ops.op_builder import AsyncIOBuilder; AsyncIOBuilder().load()" \
        >/dev/null 2>&1 || echo "DeepSpeed's async_io op not prebuilt; the NVMe offload test builds it"
else
    echo "libaio-dev could not be installed; the NVMe offload test will skip"
fi
