"""Development tooling: the local control plane, Kueue, container images and kind, outside tests/.

Each module with a command line runs as a script from the repository root (`python hack/controlplane.py
up`, as the Makefile does); tests, benchmarks and the other modules import them as the package `hack`
(the repository root is on sys.path under pytest, and a script puts it there itself).

    binaries.py      the pinned Kubernetes programs and the Go toolchain that builds them
    components.py    each control-plane program's command line, the kwok GPU nodes, the kubeconfig
    pki.py           the control plane's certificates
    controlplane.py  ControlPlane: start, use and stop a control plane (CLI: build, up, env, down)
    kueue.py         a real Kueue manager on that control plane (CLI: build)
    render.py        the Helm chart rendered as deploy/carbontrack.yaml
    demo.py          `make demo`: a gated job from Canary to Succeeded
    docker.py        a Docker engine: use the running one or start dockerd (with runc-wrapper)
    images.py        images without a registry: a debootstrap base, the project image, its smoke run
    oci.py           image archives written directly (layers, `docker save` format)
    kind.py          kind and the e2e cluster
    kindnode.py      the kind node image assembled without a registry (CLI: kind, node-image, up, down)
    docs.py          the generated reference pages under docs/reference/ (and their drift check)
    kube/, coredns/  the Go modules of the Kubernetes programs and the node's CoreDNS
    stages.yaml      kwok's pod lifecycle stages
"""
