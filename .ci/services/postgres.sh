# PostgreSQL for the shared-study tests (tests/test_search_storage.py, tests/test_study_storage.py):
# installs Debian's postgresql when missing, starts its cluster, creates a role that may create
# databases (each test makes its own) and exports SIMTUNE_TEST_POSTGRES_URL. Without it the tests
# start a throwaway server from the installed binaries themselves.
# (sourced by .ci/run, after apt.sh; returns non-zero instead of exiting)
simtune_postgres_start() {
    local version cluster port status role=simtune_test
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || apt_install postgresql || return 1
    read -r version cluster port status _ < <(pg_lsclusters --no-header 2>/dev/null | head -n 1)
    if [ -z "${version:-}" ]; then
        version=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
        pg_createcluster "$version" main >/dev/null || return 1
        read -r version cluster port status _ < <(pg_lsclusters --no-header | head -n 1)
    fi
    if [ "$status" != "online" ]; then
        pg_ctlcluster "$version" "$cluster" start || return 1
    fi
    pg_isready -q -h 127.0.0.1 -p "$port" -t 30 || return 1
    runuser -u postgres -- psql -q -p "$port" -v ON_ERROR_STOP=1 -c "DO \$\$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') THEN
            CREATE ROLE $role LOGIN CREATEDB PASSWORD '$role';
        END IF; END \$\$;" || return 1
    if [ -z "$(runuser -u postgres -- psql -p "$port" -tAc "SELECT 1 FROM pg_database WHERE datname = '$role'")" ]; then
        runuser -u postgres -- createdb -p "$port" -O "$role" "$role" || return 1
    fi
    export SIMTUNE_TEST_POSTGRES_URL="postgresql://$role:$role@127.0.0.1:$port/$role"
}
simtune_postgres_start
