"""From laptop to Azure: a new app, deploy readiness, the publish package, Kubernetes."""
