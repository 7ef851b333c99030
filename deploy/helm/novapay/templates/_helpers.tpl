{{/* Names and labels shared by every template. */}}
{{- define "novapay.fullname" -}}
{{- printf "%s-novapay" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "novapay.selectorLabels" -}}
app.kubernetes.io/name: novapay
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "novapay.labels" -}}
{{ include "novapay.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "novapay.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else -}}
{{- printf "%s-secrets" (include "novapay.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "novapay.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{- define "novapay.modelsClaim" -}}
{{- .Values.persistence.models.existingClaim | default (printf "%s-models" (include "novapay.fullname" .)) -}}
{{- end -}}

{{- define "novapay.indexClaim" -}}
{{- .Values.persistence.index.existingClaim | default (printf "%s-index" (include "novapay.fullname" .)) -}}
{{- end -}}

{{/* The knowledge-base documents for the index Job. */}}
{{- define "novapay.dataVolume" -}}
{{- if .Values.persistence.data.existingClaim }}
persistentVolumeClaim:
  claimName: {{ .Values.persistence.data.existingClaim }}
  readOnly: true
{{- else if .Values.persistence.data.configMap }}
configMap:
  name: {{ .Values.persistence.data.configMap }}
{{- else }}
{{- fail "persistence.data.existingClaim or persistence.data.configMap must name the knowledge-base documents" }}
{{- end }}
{{- end -}}
