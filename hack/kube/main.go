// Command kube links the Kubernetes programs the test control plane needs into one
// binary, so the code they share (apimachinery, client-go, apiserver) is compiled once.
// Pick the program by the binary's name (symlinks) or by the first argument:
//
//	kube kube-apiserver --etcd-servers=...
//	kubectl get pods   (kubectl -> kube)
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

var programs = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"}

// extra holds the programs of optional builds: node.go (build tag "node") adds the kind node's
// kubelet, kubeadm and kube-proxy. Each gets os.Args as the program itself would.
var extra = map[string]func() int{}

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args
	if !known(name) {
		if len(os.Args) < 2 || !known(os.Args[1]) {
			fmt.Fprintf(os.Stderr, "usage: kube {%v} [flags]\n", programs)
			os.Exit(2)
		}
		name, args = os.Args[1], os.Args[1:]
	}
	os.Exit(run(name, args))
}

func known(name string) bool {
	if _, ok := extra[name]; ok {
		return true
	}
	for _, p := range programs {
		if p == name {
			return true
		}
	}
	return false
}

func run(name string, args []string) int {
	if program, ok := extra[name]; ok {
		os.Args = args
		return program()
	}
	switch name {
	case "etcd":
		// etcdmain parses args[1:], like os.Args.
		etcdmain.Main(args)
		return 0
	case "kubectl":
		command := kubectlcmd.NewDefaultKubectlCommand()
		command.SetArgs(args[1:])
		if err := cli.RunNoErrOutput(command); err != nil {
			kubectlutil.CheckErr(err)
		}
		return 0
	}
	switch name {
	case "kube-apiserver":
		c := apiserver.NewAPIServerCommand()
		c.SetArgs(args[1:])
		return cli.Run(c)
	case "kube-controller-manager":
		c := controllermanager.NewControllerManagerCommand()
		c.SetArgs(args[1:])
		return cli.Run(c)
	default:
		c := scheduler.NewSchedulerCommand()
		c.SetArgs(args[1:])
		return cli.Run(c)
	}
}
