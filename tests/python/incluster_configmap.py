"""A pod that uses InClusterConfig reads a ConfigMap, with the official
Python client configured by `kubernetes.config.load_incluster_config()`
itself: KUBERNETES_SERVICE_HOST/PORT from the environment, the token and
ca.crt from /var/run/secrets/kubernetes.io/serviceaccount/ (the test runs
this in a private mount namespace with its own files there).

Usage: incluster_configmap.py NAMESPACE NAME
Prints {"host": ..., "data": {...}}; exits 1 printing {"status": ...} on an
API error.
"""
import json
import sys

from kubernetes import client, config


def main() -> int:
    namespace, name = sys.argv[1:3]
    config.load_incluster_config()
    host = client.Configuration.get_default_copy().host
    api = client.CoreV1Api()
    try:
        cm = api.read_namespaced_config_map(name, namespace, _request_timeout=10)
    except client.exceptions.ApiException as e:
        print(json.dumps({"host": host, "status": e.status, "reason": e.reason}))
        return 1
    print(json.dumps({"host": host, "data": cm.data}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
