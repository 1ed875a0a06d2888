// Digdag 0.10.5.1's io.digdag.core.agent.InProcessTaskCallbackApi (Apache License 2.0, Copyright
// Treasure Data, Inc.; see the runtime's LICENSE and NOTICE), modified by digdag-ha: every callback
// an agent makes to the database while it runs a task is retried while the database is
// unavailable (a failover of its leader), instead of failing the task.
//
// Why: Digdag's OperatorManager catches any error of these callbacks (taskSucceeded, openArchive,
// newTaskLogger) and calls taskFailed — "no retry" — so a task that finished while the leader
// changed failed its attempt ("Connection is closed", "terminating connection due to
// administrator command"). Each retried call is safe to repeat: taskSucceeded, taskFailed and
// retryTask change a task only while it is RUNNING under the caller's lock (a repeat after a
// commit whose answer was lost is ignored by Digdag), the others read. The class is put ahead of
// Digdag on the classpath (lib/digdag.ts digdagArgv, docker/Dockerfile); changes from the
// original are marked "digdag-ha". Retries: up to digdag.ha.callbackRetrySeconds (default 120) per
// call, waits doubling from 0.5 s to 5 s, each logged as a warning.
package io.digdag.core.agent;

import java.util.List;
import java.time.Instant;
import java.util.stream.Collectors;

import com.google.inject.Inject;
import com.google.common.base.Optional;
import com.google.common.collect.ImmutableList;
import io.digdag.client.config.Config;
import io.digdag.core.database.TransactionManager;
import io.digdag.spi.OperatorContext;
import io.digdag.spi.TaskResult;
import io.digdag.core.repository.StoredProject;
import io.digdag.core.repository.StoredWorkflowDefinitionWithProject;
import io.digdag.core.repository.ProjectStore;
import io.digdag.core.repository.ProjectStoreManager;
import io.digdag.core.repository.ResourceLimitExceededException;
import io.digdag.core.repository.ResourceNotFoundException;
import io.digdag.core.workflow.AttemptRequest;
import io.digdag.core.workflow.AttemptBuilder;
import io.digdag.core.workflow.WorkflowExecutor;
import io.digdag.core.workflow.SessionAttemptConflictException;
import io.digdag.core.session.SessionStoreManager;
import io.digdag.core.session.StoredSessionAttempt;
import io.digdag.core.session.StoredSessionAttemptWithSession;
import io.digdag.core.storage.ArchiveManager;
import io.digdag.core.queue.TaskQueueServerManager;
import io.digdag.core.log.LogServerManager;
import io.digdag.core.log.TaskLogger;
import io.digdag.spi.TaskQueueClient;
import io.digdag.spi.TaskRequest;
import io.digdag.spi.ScheduleTime;
import io.digdag.spi.LogFilePrefix;
import io.digdag.spi.StorageObject;
import io.digdag.spi.StorageFileNotFoundException;
import io.digdag.spi.ac.AccessController;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import static java.util.Locale.ENGLISH;
import static io.digdag.core.log.LogServerManager.logFilePrefixFromSessionAttempt;

public class InProcessTaskCallbackApi
        implements TaskCallbackApi
{
    protected final Logger logger = LoggerFactory.getLogger(getClass());

    // digdag-ha: how long one callback keeps retrying while the database is unavailable.
    private static final long RETRY_MILLIS = Long.getLong("digdag.ha.callbackRetrySeconds", 120L) * 1000L;

    // digdag-ha: SQLSTATE classes of a lost or refused connection (08: connection exception,
    // 57P: operator intervention, e.g. the server shutting down or in recovery, 53: insufficient
    // resources) and 25006 (a write on a server that became a read-only replica).
    static boolean databaseUnavailable(Throwable ex)
    {
        for (Throwable t = ex; t != null; t = t.getCause()) {
            if (t instanceof java.sql.SQLTransientConnectionException || t instanceof java.sql.SQLNonTransientConnectionException) {
                return true;
            }
            if (t instanceof java.sql.SQLException) {
                String state = ((java.sql.SQLException) t).getSQLState();
                if (state != null && (state.startsWith("08") || state.startsWith("57P") || state.startsWith("53") || state.equals("25006"))) {
                    return true;
                }
                String m = String.valueOf(t.getMessage());
                if (m.contains("Connection is closed") || m.contains("This connection has been closed") || m.contains("An I/O error occurred")) {
                    return true;
                }
            }
            if (t.getClass().getName().startsWith("org.skife.jdbi.v2.exceptions.UnableTo") && t.getCause() == null) {
                return true;
            }
            if (t.getCause() == t) {
                break;
            }
        }
        return false;
    }

    // digdag-ha: runs one callback, again while the database is unavailable (bounded).
    private <T> T retrying(String what, java.util.function.Supplier<T> call)
    {
        long deadline = System.currentTimeMillis() + RETRY_MILLIS;
        long wait = 500;
        for (int n = 1; ; n++) {
            try {
                return call.get();
            }
            catch (RuntimeException ex) {
                if (!databaseUnavailable(ex) || System.currentTimeMillis() + wait > deadline) {
                    throw ex;
                }
                logger.warn("digdag-ha: {} failed because the database is unavailable ({}); retry {} in {} ms", what, ex.toString(), n, wait);
                try {
                    Thread.sleep(wait);
                }
                catch (InterruptedException ie) {
                    Thread.currentThread().interrupt();
                    throw ex;
                }
                wait = Math.min(wait * 2, 5000);
            }
        }
    }

    private final ProjectStoreManager pm;
    private final SessionStoreManager sm;
    private final ArchiveManager archiveManager;
    private final LogServerManager lm;
    private final AttemptBuilder attemptBuilder;
    private final AgentId agentId;
    private final WorkflowExecutor exec;
    private final TransactionManager tm;
    private final TaskQueueClient queueClient;
    private final AccessController ac;

    @Inject
    public InProcessTaskCallbackApi(
            ProjectStoreManager pm,
            SessionStoreManager sm,
            ArchiveManager archiveManager,
            TaskQueueServerManager qm,
            LogServerManager lm,
            AgentId agentId,
            AttemptBuilder attemptBuilder,
            WorkflowExecutor exec,
            TransactionManager tm,
            AccessController ac)
    {
        this.pm = pm;
        this.sm = sm;
        this.archiveManager = archiveManager;
        this.lm = lm;
        this.agentId = agentId;
        this.attemptBuilder = attemptBuilder;
        this.exec = exec;
        this.tm = tm;
        this.queueClient = qm.getInProcessTaskQueueClient();
        this.ac = ac;
    }

    @Override
    public TaskLogger newTaskLogger(TaskRequest request)
    {
        return retrying("newTaskLogger", () -> newTaskLogger0(request));  // digdag-ha
    }

    private TaskLogger newTaskLogger0(TaskRequest request)
    {
        long attemptId = request.getAttemptId();
        String taskName = request.getTaskName();
        LogFilePrefix prefix;
        try {
            StoredSessionAttemptWithSession attempt =
                    tm.begin(() -> sm.getSessionStore(request.getSiteId()) .getAttemptById(attemptId),
                            ResourceNotFoundException.class);
            prefix = logFilePrefixFromSessionAttempt(attempt);
        }
        catch (ResourceNotFoundException ex) {
            throw new RuntimeException(ex);
        }
        return lm.newInProcessTaskLogger(agentId, prefix, taskName);
    }

    @Override
    public void taskHeartbeat(int siteId,
            List<TaskRequest> requests, AgentId agentId, int lockSeconds)
    {
        List<String> lockedIds = requests.stream()
                .collect(
                        Collectors.mapping(TaskRequest::getLockId, Collectors.toList())
                );
        tm.begin(() -> queueClient.taskHeartbeat(siteId, lockedIds, agentId.toString(), lockSeconds));
    }

    @Override
    public Optional<StorageObject> openArchive(TaskRequest request)
    {
        return retrying("openArchive", () -> openArchive0(request));  // digdag-ha
    }

    private Optional<StorageObject> openArchive0(TaskRequest request)
    {
        if (!request.getRevision().isPresent()) {
            return Optional.absent();
        }
        String revision = request.getRevision().get();

        try {
            return tm.<Optional<StorageObject>, ResourceNotFoundException, StorageFileNotFoundException>begin(() ->
                            archiveManager.openArchive(
                                    pm.getProjectStore(request.getSiteId()), request.getProjectId(), revision),
                    ResourceNotFoundException.class, StorageFileNotFoundException.class);
        }
        catch (ResourceNotFoundException ex) {
            throw new IllegalStateException(String.format(ENGLISH,
                        "Archive data for project id=%d revision='%s' is not found in database",
                        request.getProjectId(),
                        request.getRevision().or("")
                        ), ex);
        }
        catch (StorageFileNotFoundException ex) {
            throw new IllegalStateException(String.format(ENGLISH,
                        "Archive file for project id=%d revision='%s' is not found",
                        request.getProjectId(),
                        request.getRevision().or("")
                        ), ex);
        }
    }

    @Override
    public void taskSucceeded(TaskRequest request, AgentId agentId, TaskResult result)
    {
        retrying("taskSucceeded", () -> tm.begin(() -> exec.taskSucceeded(request.getSiteId(), request.getTaskId(), request.getLockId(), agentId, result)));  // digdag-ha
    }

    @Override
    public void taskFailed(TaskRequest request, AgentId agentId, Config error)
    {
        retrying("taskFailed", () -> tm.begin(() -> exec.taskFailed(request.getSiteId(), request.getTaskId(), request.getLockId(), agentId, error)));  // digdag-ha
    }

    @Override
    public void retryTask(TaskRequest request, AgentId agentId,
            int retryInterval, Config retryStateParams,
            Optional<Config> error)
    {
        retrying("retryTask", () -> tm.begin(() -> exec.retryTask(request.getSiteId(), request.getTaskId(), request.getLockId(), agentId,
                retryInterval, retryStateParams, error)));  // digdag-ha
    }

    @Override
    public StoredSessionAttempt startSession(
            OperatorContext context,
            int siteId,
            ProjectIdentifier projectIdentifier,
            String workflowName,
            Instant instant,
            Optional<String> retryAttemptName,
            Config overrideParams)
        throws ResourceNotFoundException, ResourceLimitExceededException, SessionAttemptConflictException
    {
        return tm.<StoredSessionAttempt, ResourceNotFoundException, ResourceLimitExceededException, SessionAttemptConflictException>begin(() -> {
                            ProjectStore projectStore = pm.getProjectStore(siteId);

                            //TODO check permission by AccessController for 'require' operator over another project.

                            StoredProject proj = projectIdentifier.byId() ?
                                projectStore.getProjectById(projectIdentifier.getId()) :
                                projectStore.getProjectByName(projectIdentifier.getName());

                            StoredWorkflowDefinitionWithProject def =
                                    projectStore.getLatestWorkflowDefinitionByName(proj.getId(), workflowName);

                            // use the HTTP request time as the runTime
                            AttemptRequest ar = attemptBuilder.buildFromStoredWorkflow(
                                    def,
                                    overrideParams,
                                    ScheduleTime.runNow(instant),
                                    retryAttemptName,
                                    Optional.absent(),
                                    ImmutableList.of(),
                                    Optional.absent());

                            // TODO FIXME SessionMonitor monitors is not set
                            StoredSessionAttemptWithSession attempt;
                            attempt = exec.submitWorkflow(siteId, ar, def);
                            return attempt;
                        },
                ResourceNotFoundException.class, ResourceLimitExceededException.class, SessionAttemptConflictException.class);
    }
}
