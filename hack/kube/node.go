//go:build node

// The kind node's programs, in the same binary (built with -tags node by hack/kindnode.py):
// the kubelet and kubeadm run on the node, kube-proxy in its DaemonSet's image.
package main

import (
	"context"

	"k8s.io/component-base/cli"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	kubeadm "k8s.io/kubernetes/cmd/kubeadm/app"
	kubeadmerrors "k8s.io/kubernetes/cmd/kubeadm/app/util/errors"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

func init() {
	extra["kubelet"] = func() int { return cli.Run(kubelet.NewKubeletCommand(context.Background())) }
	extra["kube-proxy"] = func() int { return cli.Run(proxy.NewProxyCommand()) }
	extra["kubeadm"] = func() int {
		kubeadmerrors.HandleError(kubeadm.Run()) // exits non-zero on error
		return 0
	}
}
