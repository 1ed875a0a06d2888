// Digdag 0.10.5.1's io.digdag.standards.operator.gcp.GcpCredentialProvider (Apache License 2.0,
// Copyright Treasure Data, Inc.; see the runtime's LICENSE and NOTICE), modified by digdag-ha:
// before a Google operator (bq>, bq_ddl>, bq_extract>, bq_load>, gcs_wait>) runs, its credential
// is exchanged for a token once, and a credential Google refuses fails the task with an error that
// names the refusal.
//
// Why: released, the token is first asked for inside the operator's own request, and bq>'s
// PollingRetryExecutor retries every error but a 4xx JSON answer of the API — forever, 1 → 30 s
// apart. A revoked or mistyped key (invalid_grant at the token endpoint) or a pod without Workload
// Identity (404 from the metadata server) then keeps the attempt running until someone kills it,
// and its cause is only in the worker's log. Now such an attempt fails by itself, in the task's
// error message (UI, `digdag attempt`, the failure alert). A token endpoint or metadata server that
// is unreachable or answers 5xx is left to the operator's own retries, as released (a warning is
// logged): that is a transient outage, not a wrong identity. Nothing of the key is printed: only
// Google's error code and description. Changes from the original are marked "digdag-ha".
package io.digdag.standards.operator.gcp;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.google.api.client.auth.oauth2.TokenErrorResponse;
import com.google.api.client.auth.oauth2.TokenResponseException;
import com.google.api.client.googleapis.auth.oauth2.GoogleCredential;
import com.google.api.client.http.HttpResponseException;
import com.google.cloud.ServiceOptions;
import com.google.common.base.Optional;
import com.google.common.collect.ImmutableList;
import com.google.inject.Inject;
import io.digdag.spi.SecretProvider;
import io.digdag.spi.TaskExecutionException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static java.nio.charset.StandardCharsets.UTF_8;

class GcpCredentialProvider
{
    // digdag-ha
    private static final Logger logger = LoggerFactory.getLogger(GcpCredentialProvider.class);
    static final String CHECK_SCOPE = "https://www.googleapis.com/auth/cloud-platform";
    // ComputeCredential's own text for a metadata server's non-200 answer ("Error code 404 trying
    // to get security access token from Compute Engine metadata …").
    private static final Pattern METADATA_CODE = Pattern.compile("Error code (\\d{3}) trying to get security access token from Compute Engine metadata");
    // A token still valid this long is not asked for again (a cached ADC credential).
    private static final long FRESH_MILLIS = 60_000L;

    private final ObjectMapper objectMapper;

    @Inject
    GcpCredentialProvider(ObjectMapper objectMapper)
    {
        this.objectMapper = objectMapper;
    }

    GcpCredential credential(SecretProvider secrets)
    {
        Optional<String> credentialOpt = secrets.getSecretOptional("gcp.credential");
        ImmutableGcpCredential.Builder builder = ImmutableGcpCredential.builder();
        if (credentialOpt.isPresent()) {
            String credential = credentialOpt.get();
            GoogleCredential googleCredential = googleCredential(credential);
            checkToken(googleCredential, "the gcp.credential secret (a service-account key)");  // digdag-ha
            builder.projectId(credentialProjectId(credential))
            .credential(googleCredential);
        }
        else {
            GoogleCredential adc;
            try {
                builder.projectId(ServiceOptions.getDefaultProjectId());
                adc = GoogleCredential.getApplicationDefault();
            }
            catch (Exception e) {
                throw new TaskExecutionException(
                    "Could not get google cloud credential: need gcp.credential secret or Application Default Credentials",
                    e
                );
            }
            checkToken(adc, "Application Default Credentials");  // digdag-ha
            builder.credential(adc);
         }
         return builder.build();
    }

    // digdag-ha: one token for the credential, as the operator's client would ask for it. A refusal
    // (4xx) fails the task naming it; anything else is left to the operator's retries.
    static void checkToken(GoogleCredential credential, String what)
    {
        Long expires = credential.getExpirationTimeMilliseconds();
        if (credential.getAccessToken() != null && expires != null && expires - System.currentTimeMillis() > FRESH_MILLIS) {
            return;
        }
        GoogleCredential scoped = credential.createScopedRequired() ? credential.createScoped(ImmutableList.of(CHECK_SCOPE)) : credential;
        try {
            if (!scoped.refreshToken()) {
                logger.warn("Could not get a Google token for {} (the token endpoint answered 5xx); the operator retries", what);
            }
        }
        catch (TokenResponseException e) {
            if (e.getStatusCode() >= 400 && e.getStatusCode() < 500) {
                TokenErrorResponse details = e.getDetails();
                String why = details == null || details.getError() == null ? ""
                    : " " + details.getError() + (details.getErrorDescription() == null ? "" : ": " + details.getErrorDescription());
                throw new TaskExecutionException("Google refused " + what + " (the token endpoint answered " + e.getStatusCode() + why
                        + "): the key is revoked, deleted or not this project's — set a valid key in gcp.credential or use Application Default Credentials");
            }
            logger.warn("Could not get a Google token for {} (HTTP {}); the operator retries", what, e.getStatusCode());
        }
        catch (HttpResponseException e) {
            if (e.getStatusCode() >= 400 && e.getStatusCode() < 500) {
                throw new TaskExecutionException("Google refused " + what + " (HTTP " + e.getStatusCode() + " from the token endpoint)");
            }
            logger.warn("Could not get a Google token for {} (HTTP {}); the operator retries", what, e.getStatusCode());
        }
        catch (IOException e) {
            String message = String.valueOf(e.getMessage());
            Matcher m = METADATA_CODE.matcher(message);
            if (m.find() && m.group(1).startsWith("4")) {
                throw new TaskExecutionException("No identity from the metadata server for " + what + " (" + message
                        + ") — on GKE bind the pod's Kubernetes service account to a Google service account (Workload Identity), or set a key in gcp.credential");
            }
            logger.warn("Could not get a Google token for {} ({}); the operator retries", what, message);
        }
    }

    private Optional<String> credentialProjectId(String credential)
    {
        JsonNode node;
        try {
            node = objectMapper.readTree(credential);
        }
        catch (IOException e) {
            throw new TaskExecutionException("Unable to parse 'gcp.credential' secret", e);
        }
        JsonNode projectId = node.get("project_id");
        if (projectId == null || !projectId.isTextual()) {
            return Optional.absent();
        }
        return Optional.of(projectId.asText());
    }

    private GoogleCredential googleCredential(String credential)
    {
        try {
            return GoogleCredential.fromStream(new ByteArrayInputStream(credential.getBytes(UTF_8)));
        }
        catch (IOException e) {
            throw new TaskExecutionException(e);
        }
    }
}
