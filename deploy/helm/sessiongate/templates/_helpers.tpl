{{/* The chart's name, and the release's name for its objects (63 characters at most). */}}
{{- define "sessiongate.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sessiongate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sessiongate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sessiongate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: ext-authz
{{- end -}}

{{- define "sessiongate.labels" -}}
{{ include "sessiongate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "sessiongate.policiesConfigMap" -}}
{{- .Values.policies.existingConfigMap | default (printf "%s-policies" (include "sessiongate.fullname" .)) -}}
{{- end -}}

{{- define "sessiongate.redisSecret" -}}
{{- .Values.store.redis.existingSecret | default (printf "%s-redis" (include "sessiongate.fullname" .)) -}}
{{- end -}}

{{- define "sessiongate.claim" -}}
{{- .Values.persistence.existingClaim | default (printf "%s-state" (include "sessiongate.fullname" .)) -}}
{{- end -}}

{{/* Refuse value sets that would break a promise or not start. */}}
{{- define "sessiongate.validate" -}}
{{- $s := .Values.store -}}
{{- if not (has $s.type (list "embedded" "redis")) -}}
{{- fail (printf "store.type %q: want embedded or redis" $s.type) -}}
{{- end -}}
{{- if and (eq $s.type "embedded") (not .Values.persistence.enabled) (not $s.allowEphemeral) -}}
{{- fail "store.type embedded without persistence.enabled forgets every sign-out at a restart (a signed-out token works again): enable persistence, use store.type redis, or set store.allowEphemeral: true to accept it" -}}
{{- end -}}
{{- if and (eq $s.type "redis") (not $s.redis.url) (not $s.redis.existingSecret) -}}
{{- fail "store.type redis: set store.redis.existingSecret (a Secret holding the URL) or store.redis.url" -}}
{{- end -}}
{{- if and .Values.admin.clientCA.existingSecret (not .Values.admin.tls.existingSecret) -}}
{{- fail "admin.clientCA.existingSecret needs admin.tls.existingSecret: client certificates are asked for in the TLS handshake" -}}
{{- end -}}
{{- if and .Values.admin.enabled (not .Values.admin.existingSecret) (not .Values.admin.clientCA.existingSecret) -}}
{{- fail "admin.enabled: set admin.existingSecret, the Secret holding the admin API's bearer token, or admin.tls and admin.clientCA for client certificates (an admin API open to the network without either could sign every user out)" -}}
{{- end -}}
{{- if and (not .Values.policies.existingConfigMap) (not .Values.policies.files) -}}
{{- fail "no policies: set policies.files or policies.existingConfigMap" -}}
{{- end -}}
{{- if and (eq $s.type "redis") (not .Values.sessionKey.existingSecret) -}}
{{- range $name, $content := .Values.policies.files -}}
{{- if regexMatch "(?m)^\\s+oidc:" $content -}}
{{- fail (printf "store.type redis with the login.oidc policy %s: set sessionKey.existingSecret (replicas sharing Redis need the same --session-key-file; sessiongate refuses to start without it)" $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $sh := .Values.shutdown -}}
{{- if le (int $sh.terminationGracePeriodSeconds) (add (int $sh.preStopSleepSeconds) (int $sh.drainDelaySeconds) (int $sh.shutdownTimeoutSeconds)) -}}
{{- fail "shutdown.terminationGracePeriodSeconds must exceed shutdown.preStopSleepSeconds, the drain delay and the shutdown timeout together" -}}
{{- end -}}
{{- end -}}
