#!/usr/bin/env bash
# attest: tss-esapi links libtss2 (libtss2-dev); the swtpm tests start a
# software TPM (swtpm, swtpm-tools for swtpm_setup/swtpm_localca);
# tpm2-tools helps debugging by hand.
exec "$(dirname "$0")/apt.sh" libtss2-dev swtpm swtpm-tools tpm2-tools
