{{/* The chart name, or nameOverride. */}}
{{- define "tencent-cert-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: fullnameOverride, else the release name when it already contains the chart
name, else "<release>-<chart>". Truncated to 63 characters (label values and Service names).
*/}}
{{- define "tencent-cert-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "tencent-cert-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator pods; never change them (Deployment selectors are immutable). */}}
{{- define "tencent-cert-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tencent-cert-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The standard labels of every rendered object, plus commonLabels. */}}
{{- define "tencent-cert-operator.labels" -}}
helm.sh/chart: {{ include "tencent-cert-operator.chart" . }}
{{ include "tencent-cert-operator.podLabels" . }}
{{- end }}

{{/* The labels of the operator pods: the standard labels but helm.sh/chart, plus commonLabels. */}}
{{- define "tencent-cert-operator.podLabels" -}}
{{ include "tencent-cert-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | toString | trunc 63 | trimSuffix "-" | trimSuffix "." | trimSuffix "_" | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: tencent-cert-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "tencent-cert-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tencent-cert-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "repository:tag", or "repository:tag@digest" when a digest is set (the digest decides what is pulled). */}}
{{- define "tencent-cert-operator.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion | toString }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* "true" when leader election is on (asked for, or more than one replica), else empty. */}}
{{- define "tencent-cert-operator.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/* The namespace of the leader-election Lease. */}}
{{- define "tencent-cert-operator.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.namespace }}
{{- end }}

{{/* Name of the default-credentials Secret the chart creates from secretId/secretKey. */}}
{{- define "tencent-cert-operator.createdCredentialsName" -}}
{{- printf "%s-default-credentials" (include "tencent-cert-operator.fullname" .) | trunc 253 }}
{{- end }}

{{/* True when the chart creates the default-credentials Secret from values. */}}
{{- define "tencent-cert-operator.createsCredentials" -}}
{{- $c := .Values.defaultCredentials }}
{{- if or $c.secretId $c.secretKey $c.token }}true{{ end }}
{{- end }}

{{/* "NAMESPACE/NAME" of the default credentials Secret, or empty when none are configured. */}}
{{- define "tencent-cert-operator.defaultCredentials" -}}
{{- $c := .Values.defaultCredentials }}
{{- if include "tencent-cert-operator.createsCredentials" . }}
{{- printf "%s/%s" .Release.Namespace (include "tencent-cert-operator.createdCredentialsName" .) }}
{{- else if $c.existingSecret.name }}
{{- printf "%s/%s" (default .Release.Namespace $c.existingSecret.namespace) $c.existingSecret.name }}
{{- end }}
{{- end }}

{{/*
The operator's rules in each place it works (a ClusterRole, or a Role per watched namespace): what the code
calls, nothing more. README "RBAC" explains each line.
*/}}
{{- define "tencent-cert-operator.operatorRules" -}}
- apiGroups: [tencentcert.io]
  resources: [tencentcertificates]
  verbs: [get, list, watch]
- apiGroups: [tencentcert.io]
  resources: [tencentcertificates/status]
  verbs: [patch]
# Secrets carry an ownerReference with blockOwnerDeletion to their TencentCertificate; where the
# OwnerReferencesPermissionEnforcement admission plugin runs (e.g. OpenShift), setting it needs this.
- apiGroups: [tencentcert.io]
  resources: [tencentcertificates/finalizers]
  verbs: [update]
# TencentCertificatePushes: a TLS Secret of their namespace published to Tencent Cloud SSL.
- apiGroups: [tencentcert.io]
  resources: [tencentcertificatepushes]
  verbs: [get, list, watch]
- apiGroups: [tencentcert.io]
  resources: [tencentcertificatepushes/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- if or .Values.routeShims.ingress .Values.routeShims.gateway }}
# Route shims: TencentCertificates generated for annotated Ingresses/Gateways, written by server-side apply
# (which creates them) and deleted when no longer asked for.
- apiGroups: [tencentcert.io]
  resources: [tencentcertificates]
  verbs: [create, patch, delete]
{{- end }}
{{- if .Values.routeShims.ingress }}
- apiGroups: [networking.k8s.io]
  resources: [ingresses]
  verbs: [get, list, watch]
{{- end }}
{{- if .Values.routeShims.gateway }}
- apiGroups: [gateway.networking.k8s.io]
  resources: [gateways]
  verbs: [get, list, watch]
{{- end }}
{{- end }}

{{/*
Labels of the CRDs: the standard ones without the release's instance (a CRD is cluster-wide, one per cluster
whichever release installed it).
*/}}
{{- define "tencent-cert-operator.crdLabels" -}}
helm.sh/chart: {{ include "tencent-cert-operator.chart" . }}
app.kubernetes.io/name: {{ include "tencent-cert-operator.name" . }}
app.kubernetes.io/part-of: tencent-cert-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
