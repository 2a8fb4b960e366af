{{/* Labels every object carries. */}}
{{- define "sllm.labels" -}}
app.kubernetes.io/part-of: sllm
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{/* The pool of workers: `worker` (centralized) or `node` (decentralized). */}}
{{- define "sllm.pool" -}}
{{- if eq .Values.architecture "decentralized" }}node{{ else }}worker{{ end }}
{{- end }}

{{/* The HTTP port of a pool member: a node's serves its front door on ports.http. */}}
{{- define "sllm.poolHttpPort" -}}
{{- if eq .Values.architecture "decentralized" }}{{ .Values.ports.http }}{{ else }}{{ .Values.ports.workerHttp }}{{ end }}
{{- end }}

{{/* MODEL_CACHE_GB: `cacheShare` of the cache volume, in 10^9 bytes, rounded down. */}}
{{- define "sllm.modelCacheGB" -}}
{{- $bytes := mulf .Values.workers.modelCache.sizeGiB 1073741824 .Values.workers.modelCache.cacheShare -}}
{{- divf $bytes 1000000000 | floor | int -}}
{{- end }}

{{/* The operator's Secret, required: without it a pod does not start, so never unsigned. */}}
{{- define "sllm.secretEnv" -}}
- name: CLUSTER_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secret.name }}
      key: CLUSTER_SECRET
- name: API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secret.name }}
      key: API_KEYS
      optional: true
- name: ADMIN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secret.name }}
      key: ADMIN_KEY
      optional: true
- name: DEPLOYMENT_MODE
  value: kubernetes
{{- if .Values.catalog.configMap }}
- name: MODEL_CATALOG
  value: /etc/sllm/catalog/{{ .Values.catalog.key }}
{{- end }}
{{- end }}

{{/* The pod's security settings: the images' non-root user, nothing more. */}}
{{- define "sllm.podSecurity" -}}
automountServiceAccountToken: false
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{- define "sllm.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
{{- end }}

{{- define "sllm.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  initialDelaySeconds: 5
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 2
{{- end }}

{{- define "sllm.catalogVolume" -}}
{{- if .Values.catalog.configMap }}
- name: catalog
  configMap:
    name: {{ .Values.catalog.configMap }}
{{- end }}
{{- end }}

{{- define "sllm.catalogMount" -}}
{{- if .Values.catalog.configMap }}
- name: catalog
  mountPath: /etc/sllm/catalog
  readOnly: true
{{- end }}
{{- end }}
