#!/usr/bin/env bash
# edge-agent: tss-esapi links libtss2 (libtss2-dev); its tests start
# software TPMs (swtpm, swtpm-tools for swtpm_setup/swtpm_localca) and the
# default model; tpm2-tools helps debugging by hand. Sensors on real
# devices use /dev/i2c-* (feature `linux`), nothing to install here.
exec "$(dirname "$0")/apt.sh" libtss2-dev swtpm swtpm-tools tpm2-tools
