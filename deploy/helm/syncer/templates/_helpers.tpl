{{/* Name of the chart's objects: the release name, plus "-syncer" unless it already says so. */}}
{{- define "syncer.fullname" -}}
{{- if contains "syncer" .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-syncer" .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "syncer.selectorLabels" -}}
app.kubernetes.io/name: syncer
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "syncer.labels" -}}
{{ include "syncer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "syncer.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The config file: values.config, with the Pushgateway of the CronJob mode. */}}
{{- define "syncer.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- if and (eq .Values.mode "cronjob") .Values.cronjob.pushgatewayURL -}}
{{- $metrics := default dict $cfg.metrics -}}
{{- $_ := set $metrics "pushgateway_url" .Values.cronjob.pushgatewayURL -}}
{{- $_ := set $cfg "metrics" $metrics -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* The pod spec shared by both modes; .args is the syncer command line. */}}
{{- define "syncer.podSpec" -}}
{{- $root := .root -}}
terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- if $root.Values.initCheck.enabled }}
{{- /* `syncer check` first: a broken setup fails the pod with one line per
       problem naming the fix, before run or serve starts. */}}
initContainers:
  - name: check
    image: {{ include "syncer.image" $root | quote }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    args: ["check", "--config", "/etc/syncer/config.yaml"]
    envFrom:
      - secretRef:
          name: {{ $root.Values.existingSecret }}
    resources:
      {{- toYaml $root.Values.resources | nindent 6 }}
    securityContext:
      {{- toYaml $root.Values.securityContext | nindent 6 }}
    volumeMounts:
      - name: config
        mountPath: /etc/syncer
        readOnly: true
{{- end }}
containers:
  - name: syncer
    image: {{ include "syncer.image" $root | quote }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    args:
      {{- toYaml .args | nindent 6 }}
    envFrom:
      - secretRef:
          name: {{ required "existingSecret: name the Secret that holds DATABASE_URL and the Microsoft Advertising credentials" $root.Values.existingSecret }}
    {{- with .ports }}
    ports:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with .probes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    resources:
      {{- toYaml $root.Values.resources | nindent 6 }}
    securityContext:
      {{- toYaml $root.Values.securityContext | nindent 6 }}
    volumeMounts:
      - name: config
        mountPath: /etc/syncer
        readOnly: true
volumes:
  - name: config
    configMap:
      name: {{ include "syncer.fullname" $root }}
{{- with $root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
