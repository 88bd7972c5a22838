{{/* Names, labels and the RBAC rules shared by the templates. */}}

{{- define "empo-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "empo-operator.fullname" -}}
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

{{/*
The name of what a release creates outside its own namespace (ClusterRole, ClusterRoleBinding, the
Roles in watched namespaces, the Grafana ConfigMap): the release namespace is part of it, so two
releases of the same name in different namespaces install side by side.
*/}}
{{- define "empo-operator.globalName" -}}
{{- printf "%s-%s" (include "empo-operator.fullname" .) .Release.Namespace | trunc 253 | trimSuffix "-" }}
{{- end }}

{{- define "empo-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "empo-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "empo-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "empo-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: empo
{{- end }}

{{- define "empo-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "empo-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "empo-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Rules the operator needs wherever it handles EmpoRuns: in a ClusterRole when cluster-wide, in a
Role per watched namespace otherwise. Each verb is one the operator (or kopf under it) uses.
*/}}
{{- define "empo-operator.runRules" -}}
# kopf lists and watches EmpoRuns and patches them (finalizer, bookkeeping annotations); the
# operator reads a run again when its RayJob changes.
- apiGroups: [empo.dev]
  resources: [emporuns]
  verbs: [get, list, watch, patch]
# Status is written by kopf and the operator. Holding get+patch also lets the operator grant
# exactly these verbs to a run's trainer Role (RBAC refuses to grant what the granter does not
# hold), so the operator needs neither bind nor escalate.
- apiGroups: [empo.dev]
  resources: [emporuns/status]
  verbs: [get, patch]
# Children are adopted (kopf.adopt), whose owner reference sets blockOwnerDeletion; clusters with
# the OwnerReferencesPermissionEnforcement admission plugin (OpenShift) require this for it.
- apiGroups: [empo.dev]
  resources: [emporuns/finalizers]
  verbs: [update]
# The run's spec ConfigMap: created, read back after a restart or a 409, updated on spec changes.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [create, get, patch]
# The trainer's ServiceAccount, Role and RoleBinding: created (read back on a 409), never changed.
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [create, get]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [create, get]
# The NetworkPolicy that closes a run's Ray cluster to everyone but its own pods: created, never changed.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [create, get]
# KubeRay RayJobs: one per attempt; watched to mirror status, patched to suspend or resume,
# deleted when a failed attempt is replaced.
- apiGroups: [ray.io]
  resources: [rayjobs]
  verbs: [create, get, list, watch, patch, delete]
# kopf and the operator post Events on the EmpoRun; while an attempt's head pod does not exist the
# operator lists its RayCluster's Warning events (KubeRay reports a refused pod creation only there).
- apiGroups: [""]
  resources: [events]
  verbs: [create, list]
# The runs' pods (label empo.dev/run), watched for what keeps them from running: Unschedulable,
# image pulls, crash loops, OOM kills, evictions. Read only.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# Kueue's LocalQueues, read while a queued run waits: one that does not exist admits nothing, and
# Kueue says so nowhere the run's owner looks.
- apiGroups: [kueue.x-k8s.io]
  resources: [localqueues]
  verbs: [get]
{{- if and .Values.peering.name (gt (len .Values.watchNamespaces) 0) }}
# kopf peering (namespaced): take part in the KopfPeering of each watched namespace.
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end }}

{{/* Cluster-scoped rules, needed in both modes. */}}
{{- define "empo-operator.clusterRules" -}}
# kopf discovers the CRDs it serves at start and follows their changes.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- if and .Values.peering.name (eq (len .Values.watchNamespaces) 0) }}
# kopf peering (cluster-wide): take part in the ClusterKopfPeering.
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end }}
