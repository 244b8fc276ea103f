// Package kube holds no code: it is a module of its own that tests what
// sessiongate ships for Kubernetes beyond plain manifests — the Helm chart
// (deploy/helm/sessiongate) and the Envoy Gateway and Contour examples
// (deploy/envoy-gateway, deploy/contour) — with the projects' own Go
// libraries: Helm renders and lints the chart, and every manifest is decoded
// strictly into its API type (Kubernetes, Prometheus Operator, Envoy
// Gateway, Contour). A module of its own, so that sessiongate's module does
// not carry Helm's and Kubernetes' dependencies; .ci/run runs it.
package kube
