"""The staff surface: triage of sealed submissions. Only deployments holding private keys serve it."""
