# Debian's package lists, read once before any service installs its packages.
# (sourced by .ci/run)
apt_ready() {
    if [ -z "${SIMTUNE_APT_UPDATED:-}" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || return 1
        export SIMTUNE_APT_UPDATED=1
    fi
}
apt_install() {
    apt_ready && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1
}
