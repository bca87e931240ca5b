#!/bin/sh
# As in Docker's Debian images: no service starts while a package installs (no init here).
exit 101
