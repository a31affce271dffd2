// Command pause is the pod sandbox's process (registry.k8s.io/pause's role): it holds the pod's
// namespaces and exits on SIGINT/SIGTERM. Built into the kind node image by hack/kindnode.py.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	// Reap any child that ends up here (the sandbox is PID 1 when the pod shares its PID namespace).
	reap := make(chan os.Signal, 1)
	signal.Notify(reap, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			os.Exit(0)
		case <-reap:
			for {
				var status syscall.WaitStatus
				if pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
