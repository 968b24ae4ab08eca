"""ms-swift plugin shim: pass this file to ``--external_plugins``; the code lives in ``streamo.swift_plugin``."""

from streamo.swift_plugin import register

register()
