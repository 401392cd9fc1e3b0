#!/usr/bin/env bash
# Install what `pdflatex report.tex` needs (booktabs, siunitx, Times, pdftoppm) so the LaTeX test
# compiles the report instead of skipping. Never fails: without root, apt or a network it says why
# and the test skips with its own reason.
set -u
if command -v pdflatex >/dev/null && kpsewhich siunitx.sty >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "ensure_texlive: no pdflatex+siunitx and no root apt-get here; the LaTeX compile test will skip"
    exit 0
fi
echo "ensure_texlive: installing texlive-latex-extra texlive-science poppler-utils (one time, a few minutes)"
export DEBIAN_FRONTEND=noninteractive
if timeout 300 apt-get update -qq >/tmp/ensure_texlive.log 2>&1 &&
   timeout 900 apt-get install -y -q --no-install-recommends texlive-latex-extra texlive-science \
       texlive-fonts-recommended poppler-utils >>/tmp/ensure_texlive.log 2>&1; then
    echo "ensure_texlive: done"
else
    echo "ensure_texlive: install failed (offline?), see /tmp/ensure_texlive.log; the LaTeX compile test will skip"
fi
exit 0
