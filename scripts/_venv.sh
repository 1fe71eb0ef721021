# Sourced by scripts/start and scripts/test: make .venv and install the project into it.
# Usage: install_venv EXTRAS   (EXTRAS is "" or "[test]")
install_venv() {
    local python="${PYTHON:-python3}"
    if [ ! -x .venv/bin/python ]; then
        echo "==> creating .venv with $("$python" --version)"
        "$python" -m venv .venv
    fi
    echo "==> installing stubichat$1 into .venv"
    if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".$1" \
            > .venv/pip-install.log 2>&1; then
        cat .venv/pip-install.log >&2
        echo "pip install failed" >&2
        return 1
    fi
}
