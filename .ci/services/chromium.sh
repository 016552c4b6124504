# Headless Chromium for the report's browser test (tests/report/test_report_html_chromium.py).
# (sourced by .ci/run, after apt.sh)
command -v chromium >/dev/null 2>&1 || apt_install chromium
